"""The cascade's answer for one photo, as plain numpy data (no torch), shared by the torch pipeline and the
ONNX runtime, and turned into the records users get by :mod:`agripatch.pipeline.records`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agripatch.pipeline.severity import Severity

__all__ = ["PatchPrediction", "assemble_predictions"]


@dataclass
class PatchPrediction:
    """The cascade's answer for one photo.

    Attributes:
        label: predicted class index.
        probs: [C] aggregated probabilities at the exit it took.
        stage: the exit it took, 0 (glance) .. k (all patches) (named like the records' column).
        boxes: [k, 4] the selected boxes in the given photo's pixels (x0, y0, x1, y1), all k even when
            fewer were read; [0, 4] when AnchorNet never ran (``glance="classifier"`` and an exit at 0).
        box_scores: [k] cell scores of those boxes.
        cells: [k] their row-major grid cell indices.
        patch_logits: [stage, C] classifier logits of the patches actually read.
        cam: [gh, gw] the cell score map used for the selection (for overlays), or None.
        macs: multiply-accumulates actually spent on this photo (see ``exit_macs``).
        features: [D] AnchorNet's pooled glance features (to refuse photos unlike the training photos), or
            None when AnchorNet never ran.
        plant_share: mean share of plant pixels over AnchorNet's cells (the leaf prior's measure), or None
            when AnchorNet never ran: a photo with almost none is no leaf photo.
        severity: the share of the leaf with symptoms and its class (``cascade.severity``), else None.
        refusal_macs: what judging the photo on its glance's views cost (0 for most photos; ``features`` are then
            the nearest view's: :meth:`~agripatch.pipeline.core.CascadeCore.nearest_views`), outside ``macs``.
        distance: the refusal's distance of ``features`` when the cascade already computed it for the views (the
            record then judges on it), else None.
        refusal_view: the view of the glance the refusal judged the photo on, when it was nearer than the photo as
            it is (:attr:`~agripatch.pipeline.refusal.Refusal.view_names`: ``turn90`` .. ``turn270``, ``exposure``),
            else None.
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
    plant_share: float | None = None
    severity: Severity | None = None
    refusal_macs: int = 0
    distance: float | None = None
    refusal_view: str | None = None


def assemble_predictions(
    final: np.ndarray,
    stage: np.ndarray,
    costs: np.ndarray,
    rows: np.ndarray,
    boxes: np.ndarray | None,
    scores: np.ndarray | None,
    cells: np.ndarray | None,
    maps: np.ndarray | None,
    features: np.ndarray | None,
    patch_logits: list[list[np.ndarray]],
    plant_shares: np.ndarray | None = None,
) -> list[PatchPrediction]:
    """One :class:`PatchPrediction` per photo of a batch, the same for the torch pipeline and the ONNX runtime.

    ``final`` [B, C] and ``stage`` [B] are each photo's probabilities and exit, ``costs`` [k + 1] the
    cumulative MACs per exit; ``rows`` [R] are the photos AnchorNet located, and ``boxes`` [R, K, 4],
    ``scores`` / ``cells`` [R, K], ``maps`` [R, gh, gw] and ``features`` [R, D] theirs (None when no photo
    was located, or no features); ``patch_logits[i]`` are photo i's patch logits in reading order;
    ``plant_shares`` [R] the located photos' plant share.
    """
    classes = final.shape[1]
    position = {int(r): i for i, r in enumerate(rows)}
    out = []
    for i in range(final.shape[0]):
        j = position.get(i)
        share = None
        if j is None:
            box, score, cell, cam, feature = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                              np.zeros(0, np.int64), None, None)
        else:
            box, score, cell = boxes[j].astype(np.float32), scores[j].astype(np.float32), cells[j].astype(np.int64)
            cam = maps[j].astype(np.float32)
            feature = features[j].astype(np.float32) if features is not None else None
            share = float(plant_shares[j]) if plant_shares is not None else None
        logits = (np.stack(patch_logits[i]).astype(np.float32) if patch_logits[i]
                  else np.zeros((0, classes), np.float32))
        s = int(stage[i])
        out.append(PatchPrediction(label=int(final[i].argmax()), probs=final[i].copy(), stage=s, boxes=box,
                                   box_scores=score, cells=cell, patch_logits=logits, cam=cam, macs=int(costs[s]),
                                   features=feature, plant_share=share))
    return out
