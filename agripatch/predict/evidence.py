"""The review evidence of each photo: its K patches cut at full resolution and its heat overlay.

Images are renamed into place whole but not fsynced (they are views of the photo and of the logged
boxes): a killed run never leaves half an image, and only a power cut in the last seconds could leave
one empty. An earlier, interrupted attempt's crops that this attempt did not rewrite are removed.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from agripatch.device import one_thread_per_worker
from agripatch.errors import AgripatchError
from agripatch.io.deferred import pixels
from agripatch.io.atomic import atomic_write_bytes
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.predictor_base import BasePredictor
from agripatch.pipeline.records import patch_reads
from agripatch.predict.outputs import OutputDir, safe_label, safe_stem, text
from agripatch.predict.overlays import cut_crop, encode_jpeg, render_overlay

__all__ = ["EvidenceWriter", "ImageJob", "write_all", "write_images"]


@dataclass(frozen=True)
class ImageJob:
    """One photo's review images as plain data (it may cross to a writer process): names inside ``outdir``,
    the upright decoded photo and what is drawn on it."""

    outdir: OutputDir
    image: np.ndarray  # HxWx3 uint8 (a view of the decoded tensor; the writer makes it contiguous)
    boxes: np.ndarray  # [K, 4] in the image's pixels
    crops: list[str]  # one name per box, or none when crops are off
    crop_dir: str
    overlay: str | None
    read: list[bool]  # per box: did the cascade read it
    cam: np.ndarray | None
    cell_boxes: np.ndarray | None
    glance_size: int
    symptom: np.ndarray | None = None  # the symptom map's probability per cell, outlined (with severity)


def write_images(job: ImageJob) -> None:
    """Write one photo's crops (dropping an interrupted attempt's leftovers) and its overlay."""
    image = np.ascontiguousarray(job.image)  # here, in the writer, not in the batch loop
    for name, box in zip(job.crops, job.boxes):
        atomic_write_bytes(job.outdir.path(name), encode_jpeg(cut_crop(image, box)), durable=False)
    if job.crops:
        _drop_stale(job.outdir, job.crop_dir, set(job.crops))
    if job.overlay is not None:
        picture = render_overlay(image, job.boxes, job.read, job.cam, job.cell_boxes, job.glance_size,
                                 symptom=job.symptom)
        atomic_write_bytes(job.outdir.path(job.overlay), encode_jpeg(picture, quality=85), durable=False)


def write_all(jobs: list[ImageJob]) -> None:
    """Write several photos' images, in order (one writer's share of a batch)."""
    for job in jobs:
        write_images(job)


def _drop_stale(outdir: OutputDir, crop_dir: str, keep: set[str]) -> None:
    """Remove crops of an earlier, interrupted attempt at this photo that this attempt did not rewrite."""
    folder = outdir.path(crop_dir)
    if not folder.is_dir():
        return
    for file in folder.iterdir():
        if file.name.startswith("patch") and file.suffix == ".jpg" and f"{crop_dir}/{file.name}" not in keep:
            file.unlink(missing_ok=True)


class EvidenceWriter:
    """Writes photos' crops and overlays into OUT in the background and returns their records at once.

    ``writers`` photos are encoded at a time while the model reads the next batch. One writer is a thread
    (JPEG encoding releases the GIL; on a CPU the model needs the cores anyway). Several are processes:
    threads spend their time waiting for the GIL the batch loop holds (H200, 16 cores, 1,000 iBean
    photos: 7 writer threads 118 photos/s against 103 with one). :meth:`wait` returns once everything
    submitted is on disk, and `predict folder` logs a batch only after that, so a logged photo always has
    its images.
    """

    def __init__(self, outdir: OutputDir, predictor: BasePredictor, *, crops: bool = True, overlays: bool = True,
                 writers: int = 1):
        self.outdir = outdir
        self.predictor = predictor
        self.crops = crops
        self.overlays = overlays
        self.labels = [safe_label(text(name), i) for i, name in enumerate(predictor.classes)]
        self.cell_boxes = predictor.cell_boxes()
        self.glance_size = predictor.glance_size
        self.writers = max(1, int(writers))
        self._pool: Executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="agripatch-evidence") if self.writers == 1 else
            ProcessPoolExecutor(max_workers=self.writers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=one_thread_per_worker))
        self._pending: list[Future] = []

    def write_batch(self, items: list[dict[str, Any]], results: list[PatchPrediction]) -> list[dict[str, Any]]:
        """The photos' records naming their crops and overlays; the images are written in the background.

        The batch goes to the writers as one chunk each, not one task per photo: every task crosses to a
        writer through threads that need the GIL the batch loop holds (on 2 cores, with the loop busy, 64
        JPEGs a batch: 225-299 photos/s one task per photo, 393-399 in chunks; `benchmarks/gpu_check.py`
        times it on a GPU machine).
        """
        records, jobs = [], []
        for item, result in zip(items, results):
            record, job = self._prepare(item, result)
            records.append(record)
            if job is not None:
                jobs.append(job)
        chunks = min(self.writers, len(jobs))
        for k in range(chunks):
            self._pending.append(self._pool.submit(write_all, jobs[k::chunks]))
        return records

    def _prepare(self, item: dict[str, Any], result: PatchPrediction) -> tuple[dict[str, Any], ImageJob | None]:
        """One photo's record and the job that writes its images (None when neither crops nor overlays)."""
        stem = safe_stem(item["path"])
        reads = patch_reads(result)
        names: list[str] = []
        if self.crops:
            for k in range(len(result.boxes)):
                if k < len(reads):
                    index, prob = reads[k]
                    names.append(f"crops/{stem}/patch{k + 1}_{self.labels[index]}_{prob:.3f}.jpg")
                else:
                    names.append(f"crops/{stem}/patch{k + 1}_unread.jpg")
        overlay = f"overlays/{stem}.jpg" if self.overlays else None
        record = self.predictor.record(dict(item, path=text(item["path"])), result, crops=names, overlay=overlay)
        if not (self.crops or self.overlays):
            return record, None
        photo = pixels(item["image"])
        image = photo.permute(1, 2, 0).numpy() if hasattr(photo, "permute") else np.asarray(photo)
        boxes = np.asarray(result.boxes)
        job = ImageJob(self.outdir, image, boxes, names, f"crops/{stem}", overlay,
                       [k < len(reads) for k in range(len(boxes))], result.cam,
                       self.cell_boxes if result.cam is not None else None, self.glance_size,
                       result.severity.symptom if result.severity is not None else None)
        return record, job

    def wait(self) -> None:
        """Block until every image submitted so far is written (re-raising a failure; a writer process that died
        is a clear error: the batch was not logged, so re-running the command redoes it)."""
        pending, self._pending = self._pending, []
        try:
            for future in pending:
                future.result()
        except BrokenProcessPool as error:
            raise AgripatchError(f"a process writing crops and overlays into {self.outdir.root} died ({error}); "
                                 "run the same command again to resume, with --writers 1 if it recurs (less "
                                 "memory)") from None

    def close(self) -> None:
        """Finish the pending images and stop the writers."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
