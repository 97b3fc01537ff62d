"""AnchorNet patch pipeline: pick cells, cut full-resolution patches, classify with early exits.

* :mod:`~agripatch.pipeline.select`: cell scores, greedy IoU selection, box mapping, cropping;
* :mod:`~agripatch.pipeline.cascade`: the glance + patches cascade and its offline replay;
* :mod:`~agripatch.pipeline.macs`: the project's only multiply-accumulate counter.
"""

from __future__ import annotations

from agripatch.pipeline.cascade import (
    NEVER_EXIT,
    CascadeConfig,
    PatchPipeline,
    PatchPrediction,
    StageOutputs,
    ThresholdChoice,
    accuracy_preserving_thresholds,
    make_glance,
    simulate_exits,
    sweep_thresholds,
    thresholds_for_budget,
    to_chw,
)
from agripatch.pipeline.macs import clear_macs_cache, count_macs, format_gmacs
from agripatch.pipeline.select import (
    Selection,
    cell_scores,
    crop_patches,
    map_boxes,
    score_map,
    select_cells,
)

__all__ = [
    "NEVER_EXIT",
    "CascadeConfig",
    "PatchPipeline",
    "PatchPrediction",
    "Selection",
    "StageOutputs",
    "ThresholdChoice",
    "accuracy_preserving_thresholds",
    "cell_scores",
    "clear_macs_cache",
    "count_macs",
    "crop_patches",
    "format_gmacs",
    "make_glance",
    "map_boxes",
    "score_map",
    "select_cells",
    "simulate_exits",
    "sweep_thresholds",
    "thresholds_for_budget",
    "to_chw",
]
