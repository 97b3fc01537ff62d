"""The review evidence of one photo: its K patches cut at full resolution and its heat overlay.

Images are renamed into place whole but not fsynced (they are views of the photo and of the logged
boxes): a killed run never leaves half an image, and only a power cut in the last seconds could leave
one empty. An earlier, interrupted attempt's crops that this attempt did not rewrite are removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agripatch.io.atomic import atomic_write_bytes
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.predict.outputs import OutputDir, safe_label, safe_stem, text
from agripatch.predict.overlays import cut_crop, encode_jpeg, render_overlay
from agripatch.predict.predictor import Predictor
from agripatch.predict.records import patch_reads

__all__ = ["EvidenceWriter"]


class EvidenceWriter:
    """Writes one photo's crops and overlay into OUT and returns its record (via the predictor)."""

    def __init__(self, outdir: OutputDir, predictor: Predictor, *, crops: bool = True, overlays: bool = True):
        self.outdir = outdir
        self.predictor = predictor
        self.crops = crops
        self.overlays = overlays
        self.labels = [safe_label(text(name), i) for i, name in enumerate(predictor.classes)]
        self.cell_boxes = predictor.cell_boxes()
        self.glance_size = predictor.glance_size

    def write(self, item: dict[str, Any], result: PatchPrediction) -> dict[str, Any]:
        """Crops and overlay of one photo (as the options ask), then its record naming them."""
        rel = text(item["path"])
        stem = safe_stem(item["path"])
        reads = patch_reads(result)
        names: list[str | None] = []
        overlay = None
        if self.crops or self.overlays:
            image = np.ascontiguousarray(item["image"].permute(1, 2, 0).numpy())
        if self.crops:
            crop_dir = f"crops/{stem}"
            for k, box in enumerate(np.asarray(result.boxes)):
                if k < len(reads):
                    index, prob = reads[k]
                    names.append(f"{crop_dir}/patch{k + 1}_{self.labels[index]}_{prob:.3f}.jpg")
                else:
                    names.append(f"{crop_dir}/patch{k + 1}_unread.jpg")
                atomic_write_bytes(self.outdir.path(names[-1]), encode_jpeg(cut_crop(image, box)), durable=False)
            self._drop_stale(crop_dir, set(names))
        if self.overlays:
            overlay = f"overlays/{stem}.jpg"
            read = [k < len(reads) for k in range(len(result.boxes))]
            picture = render_overlay(image, np.asarray(result.boxes), read, result.cam,
                                     self.cell_boxes if result.cam is not None else None, self.glance_size)
            atomic_write_bytes(self.outdir.path(overlay), encode_jpeg(picture, quality=85), durable=False)
        return self.predictor.record(dict(item, path=rel), result, crops=names, overlay=overlay)

    def _drop_stale(self, crop_dir: str, keep: set[str]) -> None:
        """Remove crops of an earlier, interrupted attempt at this photo that this attempt did not rewrite."""
        folder = self.outdir.path(crop_dir)
        if not folder.is_dir():
            return
        for file in folder.iterdir():
            if file.name.startswith("patch") and file.suffix == ".jpg" and f"{crop_dir}/{file.name}" not in keep:
                file.unlink(missing_ok=True)
