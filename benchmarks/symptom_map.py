"""Symptom map and severity on coffee_bracol (issue 25, first step): train a class-agnostic background / leaf /
symptom map on the high-res TRAIN masks, then measure the symptom share and the severity class it implies.

    python -m benchmarks.symptom_map --seeds 0          # one seed (about 17 min on 1 thread of this machine)
    python -m benchmarks.symptom_map --seeds 1,2        # more seeds; the summary covers every seed file present

Training leaves: high-res TRAIN leaves that are not in leaf/ TEST (66 high-res train leaves are leaf/ test leaves,
cropped differently: they are left out so that the leaf/ test numbers are on unseen leaves); early stopping on the
high-res VAL leaves' share MAE. Every photo is worked on at 512 x 256 (high-res photos shrunk by 2, area filter;
leaf/ photos as they are), with random scale (leaf/ crops show the leaf larger), flips and colour jitter in training.

Reported:
* high-res TEST leaves (49): Lin's CCC and MAE of the predicted share against the mask's (targets CCC >= 0.90,
  MAE <= 2 points);
* leaf/ TEST leaves (285): severity-class accuracy (target >= 88%, published 86.5%) and the confusion matrix,
  with cut-points fitted on TRAIN leaves only, two ways: on the masks' shares of the masked leaf/ train leaves
  (``mask_bins``), and on the network's predicted shares of all leaf/ train leaves (``pred_bins``);
* 95% intervals resample photos (seeds kept together).
Writes benchmarks/results/symptom_map/seed<N>.json (per-photo shares) and summary.json, and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from benchmarks.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coffee_bracol"
OUT = REPO / "benchmarks" / "results" / "symptom_map"
WORK_H, WORK_W = 256, 512  # every photo is measured at this size


# --- data ---------------------------------------------------------------------------------------


def _id(path: str) -> str:
    return Path(path).stem


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(root: Path, leaf_id: str) -> np.ndarray:
    mask = cv2.imread(str(root / "lesion_masks" / f"{leaf_id}.png"), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise SystemExit(f"cannot read the mask of leaf {leaf_id}")
    return mask


def mask_share(mask: np.ndarray) -> float:
    """Percent of leaf pixels (1 or 2) that are symptom (2)."""
    leaf = int((mask >= 1).sum())
    return 100.0 * int((mask == 2).sum()) / leaf if leaf else 0.0


def splits(root: Path) -> tuple[list[dict], dict[str, dict]]:
    """High-res rows (path, label, split) and leaf/ severity rows by leaf id."""
    with open(root / "highres" / "splits.csv", newline="") as handle:
        highres = list(csv.DictReader(handle))
    with open(root / "leaf" / "severity.csv", newline="") as handle:
        leaf = {_id(r["path"]): r for r in csv.DictReader(handle)}
    return highres, leaf


def load_highres(root: Path, rows: list[dict]) -> list[dict]:
    """High-res photos (full 1024 x 512, for training resizes) with their masks and mask shares."""
    items = []
    for row in rows:
        leaf_id = _id(row["path"])
        mask = read_mask(root, leaf_id)
        items.append({"id": leaf_id, "image": read_rgb(root / "highres" / row["path"]), "mask": mask,
                      "share": mask_share(mask)})
    return items


#: BRACOL's severity classes as shares of the leaf with symptoms, percent (Esgario et al. 2020): healthy under 0.1,
#: very low to 5, low to 10, high to 15, very high above.
SEVERITY_RANGES = ((0.0, 0.1), (0.1, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 100.0))


def load_leaf_train(root: Path, leaf: dict[str, dict]) -> list[dict]:
    """The `leaf/` TRAIN leaves at the working size with their severity class (weak labels: no mask)."""
    rows = sorted((r for r in leaf.values() if r["split"] == "train"), key=lambda r: r["path"])
    return [{"image": working(read_rgb(root / "leaf" / r["path"])), "severity": int(r["severity"])} for r in rows]


def interval_loss(shares, classes):
    """How far each predicted share (percent, a tensor) lies outside its class's range in
    :data:`SEVERITY_RANGES`, on a log scale (0.1 percent offset), so a healthy leaf read at 0.5% and a very-high
    leaf read at 8% both count; zero inside the range."""
    import torch

    low = torch.tensor([SEVERITY_RANGES[c][0] for c in classes], dtype=shares.dtype)
    high = torch.tensor([SEVERITY_RANGES[c][1] for c in classes], dtype=shares.dtype)
    log = torch.log(shares + 0.1)
    return (torch.relu(torch.log(low + 0.1) - log) + torch.relu(log - torch.log(high + 0.1))).mean()


def synthetic_items(count: int, start: int, size: int = 512, layout: str = "centred") -> list[dict]:
    """``count`` synthetic leaves (classes cycled, every other one with distractors) with their pixel masks in the
    coffee masks' coding, rendered in memory from image index ``start`` on: a map trained on them has seen no
    real leaf (the transfer question of issue 25). ``layout="field"``: the leaf anywhere in the frame among soil,
    grass and other leaves (`datasets synth --field`), so cards, hands and clutter are background."""
    from agripatch.data.synth import CLASS_NAMES, render_sample

    items = []
    for n in range(count):
        sample = render_sample(n % len(CLASS_NAMES), start + n // len(CLASS_NAMES), size=size, seed=7,
                               distractors=n % 2 == 1, layout=layout)
        mask = sample.symptom_mask()
        items.append({"id": f"synth{start + n}", "image": sample.image, "work_hw": (size, size),
                      "mask": cv2.resize(mask, (2 * size, 2 * size), interpolation=cv2.INTER_NEAREST),
                      "share": mask_share(mask)})
    return items


def working(image: np.ndarray) -> np.ndarray:
    """A photo at the working size: long side 512, aspect kept, sides multiples of 8 (a coffee leaf: 512 x 256;
    area filter when shrinking)."""
    from agripatch.pipeline.severity import map_hw

    h, w = map_hw(image.shape[0], image.shape[1], WORK_W, 8)
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


# --- training -----------------------------------------------------------------------------------


def augment(item: dict, rng: np.random.Generator, crop_h: int, crop_w: int, model, mean, std):
    """One training sample: scaled, flipped, colour-jittered crop (with its real context) and its cell targets."""
    from agripatch.models.symptom_map import cell_targets

    s = model.stride
    scale = rng.uniform(0.9, 1.6)
    work_h, work_w = item.get("work_hw", (WORK_H, WORK_W))
    h = max(crop_h, round(work_h * scale / s) * s)
    w = max(crop_w, round(work_w * scale / s) * s)
    image = cv2.resize(item["image"], (w, h), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(item["mask"], (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    targets = cell_targets(np.ascontiguousarray(mask), 2 * s)  # exact class shares of each s x s block
    b, a = model.pad_before, model.pad_after
    padded = cv2.copyMakeBorder(np.ascontiguousarray(image), b, a, b, a, cv2.BORDER_REPLICATE)
    row = int(rng.integers(0, h // s - crop_h // s + 1))
    col = int(rng.integers(0, w // s - crop_w // s + 1))
    window = padded[row * s: row * s + crop_h + b + a, col * s: col * s + crop_w + b + a].astype(np.float32) / 255
    window = window * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)  # contrast, brightness
    window = window * rng.uniform(0.92, 1.08, size=3)  # white balance
    window = (np.clip(window, 0, 1) - mean) / std
    cells = targets[:, row: row + crop_h // s, col: col + crop_w // s]
    return window.transpose(2, 0, 1), cells


def to_batch(images: list[np.ndarray], mean, std):
    import torch

    x = np.stack([(img.astype(np.float32) / 255 - mean) / std for img in images]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


def predict_shares(model, images: list[np.ndarray], mean, std, batch: int = 16) -> np.ndarray:
    """Predicted symptom share (percent) of every photo at the working size."""
    import torch

    from agripatch.pipeline.severity import severity_share

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = to_batch([working(im) for im in images[i:i + batch]], mean, std)
            out.append(severity_share(model(x).float().softmax(dim=1)).numpy())
    return np.concatenate(out).astype(np.float64)


def train(args, seed: int, train_items: list[dict], val_items: list[dict], leaf_items: list[dict] | None = None):
    """Train one symptom map; keep the weights of the epoch with the lowest validation share MAE. With
    ``leaf_items`` (``--severity-weight``), every step also reads as many whole `leaf/` train leaves and adds
    ``args.severity_weight`` x :func:`interval_loss` of their shares against their severity classes."""
    import copy

    import torch

    from agripatch.engine.severity import mean_absolute_error
    from agripatch.models.symptom_map import create_symptom_map

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = create_symptom_map(args.arch, pretrained=True)
    mean = np.array(model.cfg["mean"], np.float32)
    std = np.array(model.cfg["std"], np.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(train_items) // args.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    val_images = [working(it["image"]) for it in val_items]
    val_true = np.array([it["share"] for it in val_items])
    best = (float("inf"), None, -1)
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_items))
        losses = []
        for i in range(0, len(order) - args.batch + 1, args.batch):
            pairs = [augment(train_items[j], rng, args.crop_h, args.crop_w, model, mean, std)
                     for j in order[i:i + args.batch]]
            x = torch.from_numpy(np.ascontiguousarray(np.stack([p[0] for p in pairs]), dtype=np.float32))
            t = torch.from_numpy(np.stack([p[1] for p in pairs]))
            logits = model.forward_unpadded(x)  # the crops carry their own context (padded only at the photo edge)
            loss = -(t * logits.log_softmax(dim=1)).sum(dim=1).mean()
            if leaf_items:
                from agripatch.pipeline.severity import severity_share

                weak = [leaf_items[j] for j in rng.integers(0, len(leaf_items), args.batch)]
                shares = severity_share(model(to_batch([w["image"] for w in weak], mean, std)).softmax(dim=1))
                loss = loss + args.severity_weight * interval_loss(shares, [w["severity"] for w in weak])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        val_mae = mean_absolute_error(val_true, predict_shares(model, val_images, mean, std))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mae": val_mae,
                        "minutes": (time.perf_counter() - start) / 60})
        print(f"seed {seed} epoch {epoch + 1}: loss {np.mean(losses):.4f}  val MAE {val_mae:.3f}  "
              f"{history[-1]['minutes']:.1f} min", flush=True)
        if val_mae < best[0]:
            best = (val_mae, copy.deepcopy(model.state_dict()), epoch + 1)
    model.load_state_dict(best[1])
    return model, mean, std, {"history": history, "best_epoch": best[2], "best_val_mae": best[0],
                              "train_minutes": (time.perf_counter() - start) / 60}


# --- one seed -----------------------------------------------------------------------------------


def run_seed(args, seed: int) -> dict:
    """Train, then predict every share the report needs; the per-photo record of one seed."""
    root = args.data
    highres, leaf = splits(root)
    train_rows = [r for r in highres if r["split"] == "train" and leaf.get(_id(r["path"]), {}).get("split") != "test"]
    val_rows = [r for r in highres if r["split"] == "val"]
    test_rows = [r for r in highres if r["split"] == "test"]
    if args.limit:
        train_rows, val_rows, test_rows = train_rows[:args.limit], val_rows[:args.limit], test_rows[:args.limit]
    train_items, val_items = load_highres(root, train_rows), load_highres(root, val_rows)
    if args.train_on == "synthetic":  # no coffee mask at all: trained and early-stopped on synthetic leaves
        coffee_val = val_items
        train_items, val_items = synthetic_items(args.synthetic, 0), synthetic_items(60, 10_000)
    elif args.train_on == "coffee+field":  # the coffee masks plus synthetic field scenes: clutter is background
        train_items = train_items + synthetic_items(args.synthetic, 0, size=WORK_W, layout="field")
    leaf_items = load_leaf_train(root, leaf) if args.severity_weight > 0 else None
    print(f"seed {seed}: {len(train_items)} training leaves, {len(val_items)} validation leaves"
          + (f", {len(leaf_items)} leaf/ train leaves with severity classes only" if leaf_items else ""), flush=True)
    model, mean, std, info = train(args, seed, train_items, val_items, leaf_items)
    if args.train_on == "synthetic":
        val_items = coffee_val
    del train_items
    if args.save_weights:
        from agripatch.models.weight_files import save_weights

        args.save_weights.mkdir(parents=True, exist_ok=True)
        save_weights(model.state_dict(), args.save_weights / f"symptom_map_seed{seed}.safetensors")
    test_items = load_highres(root, test_rows)
    record = {"seed": seed, "arch": args.arch, **info,
              "highres_val": {"ids": [it["id"] for it in val_items], "mask_share": [it["share"] for it in val_items],
                              "pred_share": predict_shares(model, [it["image"] for it in val_items], mean,
                                                           std).tolist()},
              "highres_test": {"ids": [it["id"] for it in test_items],
                               "mask_share": [it["share"] for it in test_items],
                               "pred_share": predict_shares(model, [it["image"] for it in test_items], mean,
                                                            std).tolist()}}
    for split in ("test", "train"):
        rows = sorted((r for r in leaf.values() if r["split"] == split), key=lambda r: r["path"])
        rows = rows[::max(1, len(rows) // args.limit)] if args.limit else rows
        shares = []
        for i in range(0, len(rows), 64):  # read in chunks: 1,192 train photos stay out of memory at once
            images = [read_rgb(root / "leaf" / r["path"]) for r in rows[i:i + 64]]
            shares.append(predict_shares(model, images, mean, std))
        record[f"leaf_{split}"] = {"ids": [_id(r["path"]) for r in rows],
                                   "severity": [int(r["severity"]) for r in rows],
                                   "pred_share": np.concatenate(shares).tolist()}
    return record


# --- summary ------------------------------------------------------------------------------------


def mask_bins(root: Path):
    """Cut-points fitted on the masks' shares of the masked leaves that are TRAIN in leaf/ (their classes known)."""
    from agripatch.engine.severity import fit_bins

    highres, leaf = splits(root)
    shares, classes = [], []
    for row in highres:
        leaf_row = leaf.get(_id(row["path"]))
        if leaf_row is not None and leaf_row["split"] == "train" and row["split"] == "train":
            shares.append(mask_share(read_mask(root, _id(row["path"]))))
            classes.append(int(leaf_row["severity"]))
    return fit_bins(shares, classes, source=f"mask shares of {len(shares)} leaf/ train leaves with masks"), \
        np.array(shares), np.array(classes)


def share_scores(true: np.ndarray, pred: np.ndarray) -> dict:
    """Lin's CCC and the MAE of predicted shares ``pred`` [seeds, photos] against ``true``: mean, per seed, interval."""
    from agripatch.engine.severity import bootstrap_ci, lins_ccc, mean_absolute_error

    out = {}
    for name, metric in (("ccc", lins_ccc), ("mae", mean_absolute_error)):
        out[name] = float(np.mean([metric(true, p) for p in pred]))
        out[f"{name}_per_seed"] = [metric(true, p) for p in pred]
        out[f"{name}_ci"] = bootstrap_ci(metric, true, pred)
    return out


def summarise(records: list[dict], root: Path) -> dict:
    """Every metric over the seeds present, with photo-bootstrap intervals."""
    from agripatch.engine.severity import (
        bootstrap_ci,
        confusion,
        fit_bins,
        severity_accuracy,
    )

    records = sorted(records, key=lambda r: r["seed"])
    hr_true = np.array(records[0]["highres_test"]["mask_share"])
    hr_pred = np.array([r["highres_test"]["pred_share"] for r in records])  # [seeds, photos]
    sev_true = np.array(records[0]["leaf_test"]["severity"])
    leaf_pred = np.array([r["leaf_test"]["pred_share"] for r in records])
    summary: dict = {"seeds": [r["seed"] for r in records], "arch": records[0]["arch"],
                     "best_epochs": [r["best_epoch"] for r in records],
                     "train_minutes": [round(r["train_minutes"], 2) for r in records]}
    summary["highres_test"] = {"photos": int(hr_true.size), **share_scores(hr_true, hr_pred),
                               "mean_mask_share": float(hr_true.mean()), "mean_pred_share": float(hr_pred.mean())}
    if all("highres_val" in r for r in records):  # a straight line fitted on the validation leaves, per seed
        from agripatch.engine.severity import ShareCorrection

        lines = [ShareCorrection.fit(r["highres_val"]["pred_share"], r["highres_val"]["mask_share"]) for r in records]
        fixed = np.array([line(p) for line, p in zip(lines, hr_pred)])
        summary["highres_test_corrected"] = {"correction": [[c.slope, c.intercept] for c in lines],
                                             **share_scores(hr_true, fixed)}
    fitted, m_shares, m_classes = mask_bins(root)
    summary["mask_bins_ceiling"] = {  # how far a perfect share gets with these cuts, on the training leaves
        "train_accuracy_of_mask_shares": severity_accuracy(m_classes, fitted.classify(m_shares))}
    ways = {"mask_bins": [fitted] * len(records)}
    ways["pred_bins"] = [fit_bins(r["leaf_train"]["pred_share"], r["leaf_train"]["severity"],
                                  source="predicted shares of the leaf/ train leaves (this seed's network)")
                         for r in records]
    for name, bins_per_seed in ways.items():
        pred_cls = np.array([b.classify(p) for b, p in zip(bins_per_seed, leaf_pred)])
        correct = (pred_cls == sev_true).astype(float)
        summary[f"leaf_test_{name}"] = {
            "photos": int(sev_true.size),
            "source": bins_per_seed[0].source,
            "cuts_per_seed": [list(b.cuts) for b in bins_per_seed],
            "accuracy": float(correct.mean()),
            "accuracy_per_seed": correct.mean(axis=1).tolist(),
            "accuracy_ci": bootstrap_ci(np.mean, correct),
            "confusion_summed_over_seeds": sum(confusion(sev_true, p) for p in pred_cls).tolist(),
        }
        hr_cls = np.array([b.classify(p) for b, p in zip(bins_per_seed, hr_pred)])
        summary[f"leaf_test_{name}"]["highres_test_mask_share_class_vs_pred_class_agreement"] = float(
            (hr_cls == bins_per_seed[0].classify(hr_true)).mean())
    return summary


def print_table(summary: dict, macs: dict) -> None:
    hr = summary["highres_test"]
    print(f"\nsymptom map {summary['arch']}, seeds {summary['seeds']} (best epochs {summary['best_epochs']}, "
          f"{summary['train_minutes']} min training each), CPU: {summary['cpu']['model']} ({' '.join(summary['cpu']['flags'])}), threads {summary['threads']}")
    work = f"{WORK_W}x{WORK_H}"  # the working size (``--side``); the JSON keys keep their 512x256 names
    print(f"GMACs at {work}: symptom map {macs['symptom_map_gmacs']:.3f}; anchornet_lite0_s8 glance at 224x224 "
          f"{macs['anchornet_lite0_s8_224_gmacs']:.3f}, at {work} {macs['anchornet_lite0_s8_512x256_gmacs']:.3f}")
    print(f"{'what':58s} {'value':>8s}  95% interval (photos)   target")
    print(f"{'high-res test: Lin CCC, predicted vs mask share (' + str(hr['photos']) + ')':58s} {hr['ccc']:8.3f}  "
          f"[{hr['ccc_ci'][0]:.3f}, {hr['ccc_ci'][1]:.3f}]          >= 0.90")
    print(f"{'high-res test: MAE of the share, points':58s} {hr['mae']:8.3f}  "
          f"[{hr['mae_ci'][0]:.3f}, {hr['mae_ci'][1]:.3f}]          <= 2")
    fixed = summary.get("highres_test_corrected")
    if fixed:
        print(f"{'high-res test, val-fitted line: Lin CCC':58s} {fixed['ccc']:8.3f}  "
              f"[{fixed['ccc_ci'][0]:.3f}, {fixed['ccc_ci'][1]:.3f}]          >= 0.90")
        print(f"{'high-res test, val-fitted line: MAE, points':58s} {fixed['mae']:8.3f}  "
              f"[{fixed['mae_ci'][0]:.3f}, {fixed['mae_ci'][1]:.3f}]          <= 2")
    for name in ("mask_bins", "pred_bins"):
        row = summary[f"leaf_test_{name}"]
        print(f"{'leaf/ test: severity accuracy, ' + name + ' (' + str(row['photos']) + ')':58s} "
              f"{row['accuracy']:8.3f}  [{row['accuracy_ci'][0]:.3f}, {row['accuracy_ci'][1]:.3f}]          >= 0.88")
    for name in ("mask_bins", "pred_bins"):
        row = summary[f"leaf_test_{name}"]
        print(f"\n{name}: cuts {[[round(c, 2) for c in cuts] for cuts in row['cuts_per_seed']]} ({row['source']})")
        print("confusion (rows true healthy..very_high, columns predicted), summed over seeds:")
        for line in row["confusion_summed_over_seeds"]:
            print("   " + " ".join(f"{v:4d}" for v in line))


def main(argv: list[str] | None = None) -> None:
    """Train the requested seeds (skipping finished ones), then summarise every seed file present."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--arch", default="symptom_map_lite0_s8")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--side", type=int, default=512,
                        help="working long side: every photo is trained on and measured at side x side/2 "
                             "(the cascade reads leaves at 320 by default); files go to OUT/side<N>/ unless 512")
    parser.add_argument("--crop-h", type=int, default=None, help="training window height (default 7/8 of side/2)")
    parser.add_argument("--crop-w", type=int, default=None, help="training window width (default 5/8 of side)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--force", action="store_true", help="retrain seeds whose file exists")
    parser.add_argument("--save-weights", type=Path, default=None,
                        help="also keep each seed's network in this folder (e.g. benchmarks/work/symptom_map)")
    parser.add_argument("--limit", type=int, default=0, help="smoke test: at most this many photos per split")
    parser.add_argument("--train-on", choices=("coffee", "synthetic", "coffee+field"), default="coffee",
                        help="synthetic: train on synthetic leaves only (their pixel masks), score on coffee as usual; "
                             "files go to OUT/synthetic/. coffee+field: the coffee masks plus --synthetic synthetic "
                             "field scenes (colour cards, hands, soil and other leaves as background), early-stopped "
                             "on the coffee validation leaves; files go to OUT/coffee_field/")
    parser.add_argument("--synthetic", type=int, default=600, help="synthetic training leaves (--train-on synthetic)")
    parser.add_argument("--severity-weight", type=float, default=0.0,
                        help="also learn from the leaf/ TRAIN leaves' severity classes (no masks): this weight on "
                             "their shares' distance outside their class's range; files go to OUT/.../weak<W>/")
    args = parser.parse_args(argv)

    import torch

    from agripatch.io.atomic import atomic_path
    from agripatch.models import create_anchornet
    from agripatch.models.symptom_map import create_symptom_map
    from agripatch.pipeline.macs import count_macs

    global WORK_H, WORK_W
    WORK_W, WORK_H = args.side, args.side // 2
    args.crop_h = args.crop_h or WORK_H * 7 // 64 * 8
    args.crop_w = args.crop_w or WORK_W * 5 // 64 * 8
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    if not (args.data / "lesion_masks").is_dir():
        raise SystemExit(f"no coffee_bracol data at {args.data}")
    if args.train_on == "synthetic":
        args.out = args.out / "synthetic"
    elif args.train_on == "coffee+field":
        args.out = args.out / "coffee_field"
    if args.side != 512:
        args.out = args.out / f"side{args.side}"
    if args.severity_weight > 0:
        args.out = args.out / f"weak{args.severity_weight:g}"
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        path = args.out / f"seed{seed}.json"
        if path.exists() and not args.force:
            print(f"seed {seed}: {path} exists, kept")
            continue
        record = run_seed(args, seed)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(record))
    records = [json.loads(p.read_text()) for p in sorted(args.out.glob("seed*.json"))]
    records = [r for r in records if r["arch"] == args.arch]
    macs = {
        "symptom_map_gmacs": count_macs(create_symptom_map(args.arch), (1, 3, WORK_H, WORK_W)) / 1e9,
        "anchornet_lite0_s8_224_gmacs": count_macs(create_anchornet("anchornet_lite0_s8", num_classes=5),
                                                   (1, 3, 224, 224)) / 1e9,
        "anchornet_lite0_s8_512x256_gmacs": count_macs(create_anchornet("anchornet_lite0_s8", num_classes=5),
                                                       (1, 3, WORK_H, WORK_W)) / 1e9,
    }
    summary = {**summarise(records, args.data), "cpu": cpu_description(), "threads": args.threads, **macs,
               "side": args.side, "epochs": args.epochs, "severity_weight": args.severity_weight,
               "crop": [args.crop_h, args.crop_w], "lr": args.lr, "batch": args.batch}
    with atomic_path(args.out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1))
    print_table(summary, macs)


if __name__ == "__main__":
    main()
