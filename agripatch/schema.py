"""The base of every validated settings object (recipe sections, the cascade config): strict pydantic.

Unknown keys are errors and values are validated on assignment, so a typo in a recipe, a model file or
a Python call never silently falls back to a default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys and validates every assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
