"""agripatch: crop disease recognition with AnchorNet semantic patches.

A padding-free CNN (AnchorNet) scores every box of a photo, a downstream classifier reads the top-K
boxes cut from the full-resolution photo, and a glance + patches cascade stops as soon as it is sure.

    import agripatch
    model = agripatch.load("runs/ibean/model.pt")
    records = model.predict(["leaf.jpg"])
"""

from __future__ import annotations

from agripatch.version import __version__

__all__ = ["__version__", "load"]


def load(path, **kwargs):
    """Load a model file for prediction; see :func:`agripatch.api.load` (imported lazily: torch loads here)."""
    from agripatch.api import load as _load

    return _load(path, **kwargs)
