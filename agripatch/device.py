"""Which torch device to run on: one rule for train, evaluate and predict."""

from __future__ import annotations

import torch

from agripatch.errors import AgripatchError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AgripatchError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    if name not in {"cpu"} and not name.startswith("cuda"):
        raise AgripatchError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)
