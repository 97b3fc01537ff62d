"""agripatch.models: AnchorNet variants, receptive-field geometry, offline weights, downstream classifiers."""

from __future__ import annotations

from agripatch.models.anchornet import (
    AnchorNet,
    anchornet_config,
    create_anchornet,
    list_anchornets,
)
from agripatch.models.classifiers import create_classifier, list_offline_classifiers
from agripatch.models.geometry import GeometryError, ReceptiveField, receptive_field

__all__ = [
    "AnchorNet",
    "GeometryError",
    "ReceptiveField",
    "anchornet_config",
    "create_anchornet",
    "create_classifier",
    "list_anchornets",
    "list_offline_classifiers",
    "receptive_field",
]
