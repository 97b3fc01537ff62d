"""The cascade's answer for one photo, as plain numpy data (no torch), shared by the torch pipeline and the
ONNX runtime, and turned into the records users get by :mod:`agripatch.pipeline.records`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PatchPrediction"]


@dataclass
class PatchPrediction:
    """The cascade's answer for one photo.

    Attributes:
        label: predicted class index.
        probs: [C] aggregated probabilities at the exit stage.
        stage: exit stage, 0 (glance) .. k (all patches).
        boxes: [k, 4] the selected boxes in the given photo's pixels (x0, y0, x1, y1), all k even when
            fewer were read; [0, 4] when AnchorNet never ran (``glance="classifier"`` and an exit at 0).
        box_scores: [k] cell scores of those boxes.
        cells: [k] their row-major grid cell indices.
        patch_logits: [stage, C] classifier logits of the patches actually read.
        cam: [gh, gw] the cell score map used for the selection (for overlays), or None.
        macs: multiply-accumulates actually spent on this photo (see ``stage_macs``).
        features: [D] AnchorNet's pooled glance features (to refuse photos unlike the training photos), or
            None when AnchorNet never ran.
    """

    label: int
    probs: np.ndarray
    stage: int
    boxes: np.ndarray
    box_scores: np.ndarray
    cells: np.ndarray
    patch_logits: np.ndarray
    cam: np.ndarray | None
    macs: int
    features: np.ndarray | None = None
