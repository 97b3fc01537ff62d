"""Severity (issue 25): the map's input size, the share and class rule, the map's cost terms, and the cascade
measuring it with the shipped symptom map without changing the diagnosis."""

from __future__ import annotations

import numpy as np
import pytest

from agripatch.models.symptom_map import shipped_symptom_map
from agripatch.pipeline.cascade import SymptomReader
from agripatch.pipeline.macs import count_macs
from agripatch.pipeline.severity import (
    SEVERITY_NAMES,
    SHIPPED_CUTS,
    SeverityConfig,
    map_hw,
    read_severity,
)


@pytest.mark.parametrize(("hw", "side", "expected"), [
    ((512, 1024), 512, (256, 512)),  # a BRACOL high-res leaf: the size the shipped map was trained at
    ((500, 500), 512, (512, 512)),
    ((3, 1000), 512, (8, 512)),  # never below one cell
    ((4000, 3000), 256, (256, 192)),
    ((301, 437), 128, (88, 128)),
])
def test_map_hw_keeps_the_aspect_in_whole_cells(hw, side, expected):
    assert map_hw(*hw, side, 8) == expected


def test_config_checks_names_against_cuts():
    assert SeverityConfig().bins().cuts == SHIPPED_CUTS and tuple(SeverityConfig().names) == SEVERITY_NAMES
    with pytest.raises(ValueError, match="one more class name"):
        SeverityConfig(cuts=[1.0, 2.0], names=["a", "b"])
    with pytest.raises(ValueError, match="must not decrease"):
        SeverityConfig(cuts=[2.0, 1.0], names=["a", "b", "c"])


def test_read_severity_on_a_hand_made_map():
    # 2 x 2 cells: background, leaf, symptom, symptom (each certain): 2 symptom cells of 3 leaf cells
    logits = np.full((3, 2, 2), -30.0, np.float32)
    logits[0, 0, 0] = logits[1, 0, 1] = logits[2, 1, 0] = logits[2, 1, 1] = 30.0
    config = SeverityConfig(cuts=[10.0, 50.0, 70.0], names=["none", "some", "much", "most"], macs_terms=[1, 2, 3])
    severity = read_severity(logits, config)
    assert severity.share == pytest.approx(100 * 2 / 3, abs=1e-9)
    assert (severity.index, severity.name) == (2, "much")
    assert severity.symptom.shape == (2, 2) and severity.symptom[1, 1] == pytest.approx(1.0)
    assert severity.macs == 16 * 16 + 2 * 32 + 3  # an input of 16 x 16 px (2 cells of 8)
    with pytest.raises(ValueError, match=r"\[3, gh, gw\]"):
        read_severity(np.zeros((2, 2, 2)), config)


def test_share_on_a_cut_point_falls_in_the_higher_class():
    config = SeverityConfig(cuts=[50.0], names=["low", "high"])
    logits = np.full((3, 1, 2), -30.0, np.float32)
    logits[1, 0, 0] = logits[2, 0, 1] = 30.0  # one leaf cell, one symptom cell: exactly 50 %
    assert read_severity(logits, config).name == "high"


def test_cost_terms_are_the_maps_exact_macs():
    network = shipped_symptom_map()
    config = SymptomReader.shipped("symptom_map_lite0_s8").severity_config(SeverityConfig())
    for h, w in ((256, 512), (104, 200), (8, 8)):
        assert config.macs(h, w) == count_macs(network, (1, 3, h, w))


def test_cell_symptom_shares_average_the_map_under_each_box():
    from agripatch.pipeline.cells import cell_symptom_shares

    symptom = np.zeros((4, 8), np.float32)
    symptom[0, :4] = 1.0  # the top-left quarter of the map's top row
    boxes = np.array([[0, 0, 32, 16], [32, 0, 64, 64], [0, 0, 64, 64], [1, 1, 2, 2]], np.float32)  # glance 64 px
    shares = cell_symptom_shares(boxes, 64, symptom)
    assert shares[0] == pytest.approx(4 / 4)  # columns 0..3 of row 0
    assert shares[1] == pytest.approx(0.0)
    assert shares[2] == pytest.approx(4 / 32)
    assert shares[3] == pytest.approx(1.0)  # a box smaller than a map cell reads the one cell under it


def test_symptom_prior_needs_the_map_and_ranks_symptomatic_cells_first():
    from agripatch.pipeline.cells import apply_share_prior
    from agripatch.pipeline.config import CascadeConfig

    with pytest.raises(ValueError, match="set cascade.severity"):
        CascadeConfig(cell_prior="symptom")
    scores = np.array([[3.0, 2.0, 1.0, 0.0]], np.float32)
    relative = np.array([[0.1, 0.4, 1.0, 0.6]], np.float32)  # cells 2 and 3 hold at least half the best share
    order = np.argsort(-apply_share_prior(scores, relative, 0.5)[0], kind="stable")
    assert order.tolist() == [2, 3, 0, 1]  # symptomatic cells first, each group in the class map's order


def test_symptom_prior_counts_only_leafy_cells():
    """A colour card that the map reads as symptoms (cell 0: few plant pixels) neither ranks first nor sets the
    photo's scale; a photo without any leafy cell counts every cell."""
    from agripatch.pipeline.cells import apply_share_prior, leafy_symptom_shares

    symptom = np.array([[0.9, 0.2, 0.3, 0.05], [0.9, 0.2, 0.3, 0.05]], np.float32)
    plant = np.array([[0.1, 0.8, 0.6, 0.9], [0.1, 0.2, 0.0, 0.1]], np.float32)
    relative = leafy_symptom_shares(symptom, plant, 0.3)
    np.testing.assert_allclose(relative[0], [0.0, 0.2 / 0.3, 1.0, 0.05 / 0.3], rtol=1e-6)
    np.testing.assert_allclose(relative[1], symptom[1] / 0.9, rtol=1e-6)  # nothing leafy: every cell counts
    scores = np.array([[3.0, 2.0, 1.0, 0.0]], np.float32)
    order = np.argsort(-apply_share_prior(scores, relative[:1], 0.5)[0], kind="stable")
    assert order.tolist() == [1, 2, 0, 3]  # the leafy symptomatic cells first, in the class map's order
