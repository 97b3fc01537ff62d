"""Weight files: a state dict read from safetensors or torch files (never unpickling code) and written as safetensors
atomically. Where the files come from is :mod:`agripatch.models.weights`' job."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from agripatch.errors import WeightsError
from agripatch.io.atomic import atomic_path

__all__ = ["load_weights", "save_weights"]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pth.tar")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Return the tensor dict inside a checkpoint (``state_dict`` / ``model`` wrappers, DDP prefixes)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model_state_dict", "model", "module"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"weights file '{path}' does not hold a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file '{path}' holds non-tensor entries, e.g. {bad[0]!r}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors or torch file on CPU; never executes pickled code.

    Raises WeightsError naming the file when it is missing, unreadable, truncated or not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        elif name.endswith(_TORCH_SUFFIXES):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"weights file '{path}' has an unknown suffix; use .safetensors, .pth, .pt or .bin"
            )
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle, zip, OS and safetensors errors all mean "unreadable"
        reason = f"{type(exc).__name__}: {exc}"[:400]
        raise WeightsError(f"weights file '{path}' is corrupt or unreadable ({reason})") from exc
    return _unwrap(obj, path)


def save_weights(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors atomically (a crash leaves the old file or the new one).

    Tensors are copied to contiguous CPU storage first: safetensors refuses views sharing memory.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)
