"""What machine a benchmark ran on, printed and stored with every speed number (machines differ between sessions)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_description"]


def cpu_description() -> dict:
    """CPU model, core count and the flags that decide CPU kernels (AVX-512, VNNI, BF16, AMX)."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}
