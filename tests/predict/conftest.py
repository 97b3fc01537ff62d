"""Fixtures for `predict folder`: the tiny model file and a folder of awkward photos, built once per session."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import (
    BAD,
    FIELD_PHOTOS,
    ODD_NAMES,
    jpeg_bytes,
    make_model_file,
    tree,
    upright_pattern,
    write_synthetic,
)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """The tiny model file, made once per session."""
    return make_model_file(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory) -> dict:
    """A folder mixing good, odd and broken photos; returns the folder and what each file is."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    good = [f"synth/{p}" for p in write_synthetic(root / "synth")]

    pattern = upright_pattern(240, 320)
    for rel in ODD_NAMES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg_bytes(pattern))
        good.append(rel)

    odd = root / "odd"
    odd.mkdir()
    # EXIF orientation 6: stored rotated 90 degrees counter-clockwise; the reader turns it upright.
    upright = upright_pattern(360, 240)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(odd / "rotated.jpg", quality=95, exif=exif)
    # 16-bit PNG (BGR order for OpenCV), CMYK JPEG, large smooth grey JPEG (reduced decode: 1/8).
    sixteen = (pattern.astype(np.uint16) * 257)[:, :, ::-1]
    cv2.imwrite(str(odd / "sixteen_bit.png"), np.ascontiguousarray(sixteen))
    Image.fromarray(pattern).convert("CMYK").save(odd / "cmyk.jpg", quality=90)
    big_h, big_w = 9000, 12000
    ramp = (np.arange(big_w, dtype=np.uint16) * 200 // big_w).astype(np.uint8)
    grey = np.broadcast_to(ramp, (big_h, big_w)).copy()
    grey[: big_h // 3, : big_w // 4] = 250  # an asymmetric bright block, top-left
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    (odd / "large.jpg").write_bytes(buf.tobytes())
    del grey
    good += ["odd/cmyk.jpg", "odd/large.jpg", "odd/rotated.jpg", "odd/sixteen_bit.png"]

    field = []
    if FIELD_PHOTOS.is_dir():
        for photo in sorted(FIELD_PHOTOS.glob("*.jpg")):
            shutil.copy(photo, odd / f"field_{photo.name}")
            field.append(f"odd/field_{photo.name}")
    good += field

    bad = root / "bad"
    bad.mkdir()
    whole = jpeg_bytes(pattern)
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text_renamed.jpg").write_text("these are field notes, not a photo\n")
    (bad / "line\nbreak.jpg").write_bytes(whole)  # readable, but its name would break line-based logs
    # Ignored: non-image extension and hidden files.
    (bad / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(whole)
    buffer = io.BytesIO()
    Image.fromarray(pattern).save(buffer, format="PNG")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "t.png").write_bytes(buffer.getvalue())
    return {"root": root, "good": sorted(good), "bad": BAD, "field": field, "rotated_upright": upright,
            "large_hw": (big_h, big_w)}


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory, mixed_folder, model_file) -> dict:
    """`predict folder` on the mixed folder, with 2 decoding workers, run once for several tests."""
    from predict_helpers import predict_folder

    root = mixed_folder["root"]
    base = root.parent
    before = tree(base)
    out = base / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the autouse one in tests/conftest.py
    summary = predict_folder(root, model_file, out, recursive=True, topk=2, batch_size=4, workers=2,
                                 device="cpu", quiet=True)
    torch.set_num_threads(threads)
    after = tree(base)
    return {"out": out, "summary": summary, "before": before, "after": after, **mixed_folder}
