"""Full-resolution patches in PyTorch: the chosen cells' boxes (:mod:`agripatch.pipeline.cells`, mapped to the
photo's pixels by :mod:`agripatch.pipeline.boxes`) cut from the ORIGINAL photo as torchvision's ``roi_align`` cuts
them (:mod:`agripatch.pipeline.crop`), and how large a photo must be decoded so that no patch loses pixels.

Boxes everywhere are ``(x0, y0, x1, y1)`` float pixels, end-exclusive: a box ``(0, 0, 4, 4)``
covers pixels 0..3, so a box's width is ``x1 - x0``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from agripatch.pipeline.crop import BoxWeights, box_weights, sampling_ratio

__all__ = ["crop_patches", "decode_min_side"]


def _check_image(image: Tensor) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"originals must be [3, H, W] tensors, got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"originals must be uint8 or float, got {image.dtype}")


def _window(image: Tensor, w: BoxWeights, device: torch.device) -> Tensor:
    """The box's window of the photo as float32 0..1 [3, h, w] on ``device`` (only those pixels are converted;
    uint8 moves first, 4x cheaper to transfer)."""
    pixels = image[:, w.y0:w.y1, w.x0:w.x1].to(device)
    return pixels.to(torch.float32) / 255.0 if pixels.dtype == torch.uint8 else pixels.to(torch.float32)


def _crop_box(image: Tensor, w: BoxWeights | None, out_size: int, device: torch.device) -> Tensor:
    """[3, S, S] unnormalised: ``Wy @ window @ Wx.T`` per channel (zeros off the photo). On the CPU the matrices are
    applied in their compressed rows (each output row reads only the few photo rows its samples fall between: the
    high-res leaves' crop took 2.4-2.7 instead of 5.9-6.4 ms a leaf, `benchmarks/README.md`, "PyTorch's crop in
    compressed rows"); elsewhere as dense products, in the cheaper order."""
    if w is None:
        return torch.zeros(3, out_size, out_size, device=device)
    if device.type == "cpu":
        return _crop_box_rows(image, w, out_size)
    window = _window(image, w, device)
    h, width = window.shape[1:]
    wy = torch.tensor(w.wy, device=device)  # a copy: the remembered matrices are read-only
    wx = torch.tensor(w.wx, device=device)
    if h * width * out_size + out_size * h * out_size <= out_size * h * width + out_size * width * out_size:
        return torch.matmul(wy, torch.matmul(window, wx.T))  # columns first: [3, h, S], then rows
    return torch.matmul(torch.matmul(wy, window), wx.T)  # rows first: [3, S, w], then columns


def _crop_box_rows(image: Tensor, w: BoxWeights, out_size: int) -> Tensor:
    """The CPU crop: the matrices in compressed rows over the window in the photo's pixel order (HWC, the decoders'
    layout, which ``image`` views), as the ONNX runtime applies them (:func:`agripatch.runtime.roi.roi_align`): the
    window becomes float32 in one pass with no transposing copy of it, only of the S rows made from it. Each output
    sums the same products in the same order as in channel-first order, so the pixels are the same, in 12-19% less
    time a box timed alone (benchmarks/README.md, "The symptom map reads the glance's decode")."""
    pixels = image.permute(1, 2, 0)[w.y0:w.y1, w.x0:w.x1]  # [h, w, 3], a view
    window = torch.div(pixels, 255.0) if pixels.dtype == torch.uint8 else pixels.to(torch.float32)
    h, width = window.shape[:2]
    wy, wx = (_torch_csr(m) for m in w.sparse)
    rows = torch.sparse.mm(wy, window.reshape(h, width * 3))  # [S (y), w * 3]
    rows = rows.view(out_size, width, 3).transpose(0, 1).reshape(width, out_size * 3)  # [w, S (y) * 3]
    return torch.sparse.mm(wx, rows).view(out_size, out_size, 3).permute(2, 1, 0)  # [3, S (y), S (x)]


def _torch_csr(matrix) -> Tensor:
    """A scipy compressed-row matrix as a torch one sharing its arrays (torch only reads them)."""
    return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr), torch.from_numpy(matrix.indices),
                                   torch.from_numpy(matrix.data), matrix.shape, check_invariants=False)


# torch warns once that sparse CSR support "is in beta"; compressed rows @ dense on the CPU is all the crop uses.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def crop_patches(
    originals: Sequence[Tensor] | Tensor,
    boxes: Tensor,
    out_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    device: torch.device | str | None = None,
    slot: int | None = None,
) -> Tensor:
    """Cut K boxes per photo from the full-resolution originals, resized to S x S and normalised.

    The crop is torchvision's ``roi_align(aligned=True)`` with ``sampling_ratio = ceil(largest box side of the
    photo / out_size)`` (pixel i covers [i, i + 1), so an integer-aligned box at scale 1 reproduces the pixels; each
    output pixel averages a grid of samples at least as dense as the source pixels, so shrinking a large box
    behaves like an area filter; boxes smaller than S are bilinearly upsampled), computed as two small matrix
    products per box (:mod:`agripatch.pipeline.crop`, shared with the ONNX runtime): the same numbers to float32
    rounding, several times faster on large photos. The originals may all have different sizes.

    Args:
        originals: B photos [3, H_i, W_i], uint8 in 0..255 or float in 0..1, or a [B, 3, H, W] tensor.
        boxes: [B, K, 4] boxes in each photo's own pixels.
        out_size: side S of the square patches.
        mean, std: per-channel normalisation of the downstream classifier (0..1 scale).
        device: where to crop; defaults to ``boxes.device``.
        slot: only box ``slot`` of each photo (its sampling ratio still from all K boxes).

    Returns:
        [B * K, 3, S, S] float32, image-major (patch k of image b at ``b * K + k``); with ``slot``, [B, 3, S, S].
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [B, K, 4], got shape {tuple(boxes.shape)}")
    if len(originals) != boxes.shape[0]:
        raise ValueError(f"{len(originals)} originals but boxes for {boxes.shape[0]} images")
    if out_size < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need 3 values (RGB)")
    target = torch.device(device) if device is not None else boxes.device
    boxes_np = boxes.detach().cpu().numpy().astype(np.float32)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    picked = range(boxes_np.shape[1]) if slot is None else [slot]
    crops = []
    # Resampling, not learning: float32 even inside a training step's autocast, whose bf16 sparse products do not
    # exist on the CPU (the patch stage failed on AMX CPUs, where training runs in bf16) and lose pixels elsewhere.
    with torch.autocast(target.type, enabled=False):
        for image, photo_boxes in zip(originals, boxes_np):
            _check_image(image)
            grid = sampling_ratio(photo_boxes, out_size)
            height, width = image.shape[1:]
            for k in picked:
                weights = box_weights(photo_boxes[k], out_size, grid, height, width)
                crops.append(_crop_box(image, weights, out_size, target))
    if not crops:
        return torch.empty(0, 3, out_size, out_size, device=target)
    return (torch.stack(crops) - mean_t) / std_t


def decode_min_side(glance_size: int, patch_size: int, receptive_field: int) -> int:
    """Shorter side a photo must keep so that nothing the cascade looks at loses pixels.

    The glance needs ``glance_size`` pixels per side; a patch is one AnchorNet cell, ``receptive_field``
    glance pixels, i.e. ``receptive_field * side / glance_size`` photo pixels, and should have at least
    ``patch_size`` of them: ``side >= patch_size * glance_size / receptive_field``. A 48-MP photo is then
    decoded at 1/2..1/8 (JPEG DCT scaling) whenever its short side allows, which is most of the cost.
    """
    if min(glance_size, patch_size, receptive_field) < 1:
        raise ValueError("glance_size, patch_size and receptive_field must be positive")
    return max(int(glance_size), math.ceil(patch_size * glance_size / receptive_field))
