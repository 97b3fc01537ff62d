"""How bright a photo was taken, and the same photo as if taken at another exposure.

A leaf photographed in strong sun, or with the camera's exposure a stop too long, holds the same leaf with its
colours washed towards white. AnchorNet's features move with them, far enough that the refusal's distance calls
such a leaf ``not_a_leaf`` (benchmarks/README.md, "Photos taken another way": 6-11% of iBean test leaves made a
stop brighter). A camera's auto-exposure scales the light that reached the sensor so that the scene's mean sits at
a set level; :func:`exposed_like` does the same to a glance afterwards, towards the level of the training photos
(:func:`exposure`, their median), in linear light (sRGB's curve undone, scaled, redone), so a photo already at that
level is returned unchanged up to rounding. Clipped highlights stay lost: the re-exposed photo is nearer the
training photos, not equal to the photo a good exposure would have taken.

Pure numpy, so the PyTorch backend, the ONNX runtime and training compute the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exposed_like", "exposure", "to_linear", "to_srgb"]

_DARKEST = 1e-4  # a black photo's exposure, so scaling it stays finite (it is scaled up and clipped)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB values in 0..1 -> linear light in 0..1 (the standard's piecewise curve), float32."""
    x = np.asarray(srgb, dtype=np.float32)
    return np.where(x <= 0.04045, x / np.float32(12.92),
                    ((np.maximum(x, 0.04045) + np.float32(0.055)) / np.float32(1.055)) ** np.float32(2.4))


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB values in 0..1 (clipped first: what a sensor saturates at), float32."""
    x = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * np.float32(12.92),
                    np.float32(1.055) * np.maximum(x, 0.0031308) ** np.float32(1 / 2.4) - np.float32(0.055))


def exposure(glances: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] 0..1 sRGB glances -> [N]: each one's mean in linear light (a camera meter's reading)."""
    glances = np.asarray(glances, dtype=np.float32)
    return to_linear(glances).reshape(len(glances), -1).mean(axis=1)


def exposed_like(glances: np.ndarray, level: float) -> np.ndarray:
    """[N, 3, H, W] 0..1 sRGB glances, each scaled in linear light so that its :func:`exposure` is ``level``
    (up to what clips at white), float32: the photo as an auto-exposure aiming at ``level`` would have taken it."""
    glances = np.asarray(glances, dtype=np.float32)
    linear = to_linear(glances)
    gains = np.float32(level) / np.maximum(linear.reshape(len(glances), -1).mean(axis=1), np.float32(_DARKEST))
    return np.ascontiguousarray(to_srgb(linear * gains.reshape(-1, 1, 1, 1)), dtype=np.float32)
