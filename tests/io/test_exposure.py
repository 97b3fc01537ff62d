"""The exposure meter and re-exposure the refusal's exposure view reads (agripatch.io.exposure): exact values of the
sRGB curve, the meter on known photos, a brightened photo brought back, and the edge cases."""

import numpy as np
import pytest

from agripatch.io.exposure import exposed_like, exposure, to_linear, to_srgb


def test_srgb_curve_round_trips_and_hits_the_standards_values():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(to_srgb(to_linear(x)), x, atol=2e-6)
    # sRGB 0.5 is 21.4% linear light; 18% grey (a light meter's aim) is sRGB 0.4613
    assert float(to_linear(np.float32(0.5))) == pytest.approx(0.21404, abs=1e-5)
    assert float(to_srgb(np.float32(0.18))) == pytest.approx(0.46135, abs=1e-5)
    assert to_linear(x).dtype == to_srgb(x).dtype == np.float32


def test_the_meter_reads_the_mean_in_linear_light():
    grey = np.full((2, 3, 4, 4), 0.5, np.float32)
    grey[1] = 0.0
    np.testing.assert_allclose(exposure(grey), [0.21404, 0.0], atol=1e-5)
    halves = np.zeros((1, 3, 2, 2), np.float32)
    halves[..., 0] = 1.0  # half white, half black: half the light
    assert exposure(halves)[0] == pytest.approx(0.5)


def test_a_photo_a_stop_too_bright_is_brought_back_and_one_at_the_level_is_left_alone():
    rng = np.random.default_rng(0)
    photo = rng.uniform(0.05, 0.6, (3, 3, 16, 16)).astype(np.float32)  # a stop up stays under white
    level = exposure(photo)
    brighter = to_srgb(to_linear(photo) * 2)
    assert (exposure(brighter) > 1.9 * level).all()
    back = np.concatenate([exposed_like(brighter[i:i + 1], float(level[i])) for i in range(3)])
    np.testing.assert_allclose(back, photo, atol=1e-5)
    np.testing.assert_allclose(exposure(back), level, rtol=1e-5)
    np.testing.assert_allclose(exposed_like(photo[:1], float(level[0])), photo[:1], atol=1e-5)


def test_clipped_light_stays_lost_and_black_stays_finite():
    white = np.ones((1, 3, 4, 4), np.float32)
    darker = exposed_like(white, 0.21404)
    np.testing.assert_allclose(darker, 0.5, atol=1e-4)  # a white photo becomes uniform grey: nothing to recover
    black = exposed_like(np.zeros((1, 3, 4, 4), np.float32), 0.2)
    assert np.isfinite(black).all() and (black == 0).all()
    mixed = exposed_like(np.stack([np.zeros((3, 4, 4)), np.full((3, 4, 4), 0.9)]).astype(np.float32), 0.9)
    assert mixed.shape == (2, 3, 4, 4) and mixed.dtype == np.float32 and (mixed <= 1).all() and (mixed >= 0).all()
