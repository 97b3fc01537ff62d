"""Which re-exposed (or sharpened) glance should the refusal judge a leafy photo on? (issue 24; the replay that chose
``refusal.view_exposure``, benchmarks/README.md "Refusal on the re-exposed glance")

    python -m benchmarks.exposure_views --model RUN/model.pt --data ROOT --name NAME

The ``--split`` photos of ``--data`` under five shifts of ``capture_shift.py`` (as taken, exposure +1 / -1 stop,
blur, haze; each JPEG-encoded in memory at the shift's quality) and ``refusal.py``'s non-leaf sets are made into
glances from the decoded arrays (:func:`agripatch.io.glance.glance_array`, not through ``predict``'s file reads).
For each photo the model's own refusal gives the distance and plant share; a leafy photo it would refuse
(``not_a_leaf`` and at least ``VIEW_MIN_PLANT_SHARE`` plant pixels) is then judged on the nearer of itself and one
re-exposed glance, for each candidate:

* ``linear_mean``: scaled in linear light so its mean is the training glances' median (what ships);
* ``plant_mean``: the same, metered on plant pixels only (against the training glances' plant pixels);
* ``half_light``: half the light (the exact inverse of the +1 stop shift, an oracle);
* ``stretch``: its 1st-99th percentile stretched to 0..1;
* ``unsharp``: not an exposure: an unsharp mask (Gaussian sigma 1 px at the glance's size, amount 1.5), for the
  blurred leaves (tried, not shipped: it lets green soil-and-hand scenes through).

Prints, per set, the share refused without a view and with each; writes
``benchmarks/results/refusal_views/NAME_exposure_views.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agripatch.io.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "refusal_views"
SHIFTED = ["as taken (re-saved)", "exposure +1 stop", "exposure -1 stop", "blur (sigma 2 px)", "haze (contrast x0.7)"]


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def candidates(train_glances: np.ndarray) -> dict:
    """Each candidate re-exposure of a [N, 3, G, G] glance batch, its level metered on ``train_glances``."""
    import torch

    from agripatch.io.exposure import exposed_like, exposure, to_linear, to_srgb
    from agripatch.pipeline.priors import plant_mask

    def plant_level(glances: np.ndarray) -> np.ndarray:
        masks = plant_mask(torch.from_numpy(glances)).numpy() > 0.5
        linear = to_linear(glances)
        return np.array([lin[:, m].mean() if m.sum() > 50 else lin.mean() for lin, m in zip(linear, masks)])

    level, plant_target = float(np.median(exposure(train_glances))), float(np.median(plant_level(train_glances)))

    def plant_mean(glances: np.ndarray) -> np.ndarray:
        gains = plant_target / np.maximum(plant_level(glances), 1e-4)
        return to_srgb(to_linear(glances) * gains.reshape(-1, 1, 1, 1).astype(np.float32)).astype(np.float32)

    def stretch(glances: np.ndarray) -> np.ndarray:
        low = np.percentile(glances.reshape(len(glances), -1), 1, axis=1).reshape(-1, 1, 1, 1)
        high = np.percentile(glances.reshape(len(glances), -1), 99, axis=1).reshape(-1, 1, 1, 1)
        return np.clip((glances - low) / np.maximum(high - low, 1e-3), 0, 1).astype(np.float32)

    def unsharp(glances: np.ndarray) -> np.ndarray:
        sharpened = []
        for glance in glances.transpose(0, 2, 3, 1):
            sharpened.append(np.clip(glance + 1.5 * (glance - cv2.GaussianBlur(glance, (0, 0), 1.0)), 0, 1))
        return np.ascontiguousarray(np.stack(sharpened).transpose(0, 3, 1, 2), dtype=np.float32)

    return {"linear_mean": lambda g: exposed_like(g, level), "plant_mean": plant_mean,
            "half_light": lambda g: to_srgb(to_linear(g) * np.float32(0.5)).astype(np.float32), "stretch": stretch,
            "unsharp": unsharp}


def main(argv: list[str] | None = None) -> None:
    """Replay every candidate on every set and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset root with splits.csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)

    import torch

    from agripatch.data.splits import read_splits_csv
    from agripatch.io.glance import glance_array
    from agripatch.io.images import read_image
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.refusal import VIEW_MIN_PLANT_SHARE

    from benchmarks import refusal as sets_of
    from benchmarks.capture_shift import SHIFTS
    from benchmarks.machine import cpu_description

    bundle = load_model_file(args.model)
    rule, scorer, size = bundle.refusal, bundle.pipeline.glance_scorer(), bundle.pipeline.config.glance_size
    rows = read_splits_csv(args.data / "splits.csv")
    test = [args.data / row.path for row in rows if row.split == args.split]
    train = [args.data / row.path for row in rows if row.split == "train"][::4]

    def glances(images: list[np.ndarray]) -> np.ndarray:
        return np.stack([glance_array(image, size) for image in images])

    @torch.no_grad()
    def judged(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [scorer(torch.from_numpy(batch[i:i + 64])) for i in range(0, len(batch), 64)]
        features = np.concatenate([p[2].float().numpy() for p in parts])
        shares = np.concatenate([p[3].float().numpy().mean(axis=1) for p in parts])
        return rule.distances(features), shares

    views = candidates(glances([read_image(path) for path in train]))
    photos = [read_image(path) for path in test]
    photo_sets = {name: [_jpeg_round_trip(SHIFTS[name][0](p), SHIFTS[name][1]) for p in photos] for name in SHIFTED}
    samples = sets_of.sample_images()
    photo_sets.update({"non-leaf: sample photos": samples, "non-leaf: their random crops": sets_of.random_crops(samples),
                       "non-leaf: leafless crops of test photos": sets_of.leafless_crops(test),
                       "non-leaf: synthetic soil/hand scenes": sets_of.synthetic_scenes()})
    result = {"model": str(args.model), "data": str(args.data), "split": args.split, "cpu": cpu_description(),
              "sets": {}}
    for name, images in photo_sets.items():
        batch = glances(images)
        distances, shares = judged(batch)
        refused = rule.not_a_leaf(distances, shares)
        need = refused & (shares >= VIEW_MIN_PLANT_SHARE)
        entry = {"photos": len(images), "judged_on_a_view": int(need.sum()), "refused": float(refused.mean())}
        for view, make in views.items():
            seen, _ = judged(make(batch)) if need.any() else (distances, shares)
            entry[view] = float(rule.not_a_leaf(np.where(need, np.minimum(distances, seen), distances), shares).mean())
        result["sets"][name] = entry
        print(f"{name:42s} {len(images):4d} photos, {need.sum():3d} judged on a view: refused {entry['refused']:.3f}; "
              + ", ".join(f"{view} {entry[view]:.3f}" for view in views), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}_exposure_views.json", json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS / f'{args.name}_exposure_views.json'}")


if __name__ == "__main__":
    main()
