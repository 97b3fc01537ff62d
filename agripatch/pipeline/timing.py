"""Wall time per named part of a run (glance network, selection, crop, patch classifier, ...), for profiling the
cascade as a user runs it (`benchmarks/cascade_profile.py`). Off by default: an absent timer costs one attribute check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager

__all__ = ["PartTimes", "part"]


class PartTimes:
    """Seconds and calls per part, summed over every call; parts keep the order they were first seen in."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the block as part ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1

    def add(self, other: PartTimes) -> None:
        """Fold another timer's sums into this one."""
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + other.calls[name]


def part(times: PartTimes | None, name: str) -> ContextManager[None]:
    """``times.part(name)``, or nothing when no timer is attached."""
    return nullcontext() if times is None else times.part(name)
