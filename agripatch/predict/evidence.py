"""The review evidence of each photo: its K patches cut at full resolution and its heat overlay.

Images are renamed into place whole but not fsynced (they are views of the photo and of the logged
boxes): a killed run never leaves half an image, and only a power cut in the last seconds could leave
one empty. An earlier, interrupted attempt's crops that this attempt did not rewrite are removed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from agripatch.io.atomic import atomic_write_bytes
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.predictor_base import BasePredictor
from agripatch.pipeline.records import patch_reads
from agripatch.predict.outputs import OutputDir, safe_label, safe_stem, text
from agripatch.predict.overlays import cut_crop, encode_jpeg, render_overlay

__all__ = ["EvidenceWriter"]


class EvidenceWriter:
    """Writes photos' crops and overlays into OUT on a background thread and returns their records at once.

    JPEG encoding releases the GIL, so one writer thread encodes batch N while the model reads batch N + 1;
    :meth:`wait` returns once everything submitted is on disk, and `predict folder` logs a batch only after
    that, so a logged photo always has its images.
    """

    def __init__(self, outdir: OutputDir, predictor: BasePredictor, *, crops: bool = True, overlays: bool = True):
        self.outdir = outdir
        self.predictor = predictor
        self.crops = crops
        self.overlays = overlays
        self.labels = [safe_label(text(name), i) for i, name in enumerate(predictor.classes)]
        self.cell_boxes = predictor.cell_boxes()
        self.glance_size = predictor.glance_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agripatch-evidence")
        self._pending: list[Future] = []

    def write(self, item: dict[str, Any], result: PatchPrediction) -> dict[str, Any]:
        """The photo's record naming its crops and overlay; the images themselves are written in the background."""
        stem = safe_stem(item["path"])
        reads = patch_reads(result)
        names: list[str | None] = []
        if self.crops:
            for k in range(len(result.boxes)):
                if k < len(reads):
                    index, prob = reads[k]
                    names.append(f"crops/{stem}/patch{k + 1}_{self.labels[index]}_{prob:.3f}.jpg")
                else:
                    names.append(f"crops/{stem}/patch{k + 1}_unread.jpg")
        overlay = f"overlays/{stem}.jpg" if self.overlays else None
        if self.crops or self.overlays:
            self._pending.append(self._pool.submit(self._images, item["image"], result, f"crops/{stem}", names,
                                                   overlay, len(reads)))
        return self.predictor.record(dict(item, path=text(item["path"])), result, crops=names, overlay=overlay)

    def wait(self) -> None:
        """Block until every image submitted so far is written (re-raising a failure)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Finish the pending images and stop the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _images(self, photo, result: PatchPrediction, crop_dir: str, names: list[str | None], overlay: str | None,
                read_count: int) -> None:
        image = np.ascontiguousarray(photo.permute(1, 2, 0).numpy() if hasattr(photo, "permute") else photo)
        for name, box in zip(names, np.asarray(result.boxes)):
            atomic_write_bytes(self.outdir.path(name), encode_jpeg(cut_crop(image, box)), durable=False)
        if self.crops:
            self._drop_stale(crop_dir, set(names))
        if overlay is not None:
            read = [k < read_count for k in range(len(result.boxes))]
            picture = render_overlay(image, np.asarray(result.boxes), read, result.cam,
                                     self.cell_boxes if result.cam is not None else None, self.glance_size)
            atomic_write_bytes(self.outdir.path(overlay), encode_jpeg(picture, quality=85), durable=False)

    def _drop_stale(self, crop_dir: str, keep: set[str]) -> None:
        """Remove crops of an earlier, interrupted attempt at this photo that this attempt did not rewrite."""
        folder = self.outdir.path(crop_dir)
        if not folder.is_dir():
            return
        for file in folder.iterdir():
            if file.name.startswith("patch") and file.suffix == ".jpg" and f"{crop_dir}/{file.name}" not in keep:
                file.unlink(missing_ok=True)
