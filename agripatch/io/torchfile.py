"""Safe torch files: what training checkpoints and model files are made of.

Both are plain dicts of tensors, strings and numbers saved with `torch.save` and loaded with
`torch.load(weights_only=True)`, so loading never unpickles arbitrary objects. Every write is atomic
(temp file + rename): a kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from agripatch.errors import CheckpointError
from agripatch.io.atomic import atomic_write_bytes


def save_object(obj: dict[str, Any], path: str | Path) -> Path:
    """Serialise a dict of tensors/primitives to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_object(path: str | Path, expected_format: str | None = None) -> dict[str, Any]:
    """Load a file written by `save_object` safely (weights_only), checking its format tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not an agripatch file: {error}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} is not an agripatch file (top level is {type(obj).__name__})")
    if expected_format is not None and obj.get("format") != expected_format:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {obj.get('format')!r}, expected {expected_format!r}"
        )
    return obj


def load_matching_state(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load `state_dict` into `module`, raising CheckpointError that names the file on any mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [key for key in own.keys() & state_dict.keys() if own[key].shape != state_dict[key].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing keys {missing[:3]}")
        if unexpected:
            details.append(f"unexpected keys {unexpected[:3]}")
        if wrong:
            key = sorted(wrong)[0]
            details.append(f"shape of {key!r} is {tuple(state_dict[key].shape)}, model has {tuple(own[key].shape)}")
        raise CheckpointError(
            f"checkpoint {source!r} does not fit this architecture ({'; '.join(details)}); "
            "was it written by another recipe or model?"
        )
    module.load_state_dict(state_dict)


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (unwrapping DDP / compiled modules)."""
    inner = getattr(module, "module", module)
    inner = getattr(inner, "_orig_mod", inner)
    return {key: value.detach().cpu().clone() for key, value in inner.state_dict().items()}
