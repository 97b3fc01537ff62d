"""How far a network trained on BRACOL's severity classes gets, against the symptom map's share and cut-points.

    python -m benchmarks.severity_classifier [--seeds 0,1,2] [--arch mobilenetv2_100] [--side 256] [--epochs 15]

Issue 25 asks for 88% severity-class accuracy on the 285 `leaf/` test leaves (the published reference, a
multi-task ResNet-50, 86.5%). The shipped symptom map measures the share of the leaf with symptoms and its
cut-points turn that into a class: 0.807 on seed 0, and no reader of the map tried so far got past 0.82
(benchmarks/README.md). Is the class out of reach from the share, or out of reach altogether for networks of
this size? This fine-tunes an ImageNet-pretrained timm classifier on the 1,192 `leaf/` train leaves' severity
classes (the whole leaf at ``side x side/2``, flips and mild colour jitter, no crops: a crop changes the share),
keeps its last epoch (the recipes' rule; no choice is made on the validation or test leaves) and scores the test
leaves, paired against the shipped map's classes on the same leaves. Writes
``benchmarks/results/severity/classifier_<arch>_<side>.json`` (per-leaf predictions per seed) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from benchmarks.machine import cpu_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEAF = REPO.parent / "shared" / "data" / "coffee_bracol" / "leaf"
MAP_RECORD = REPO / "benchmarks" / "results" / "symptom_map" / "side224" / "seed0.json"  # the shipped map's shares


def read_leaves(root: Path) -> dict[str, list[dict]]:
    """``leaf/severity.csv`` rows by split: path, id and severity class."""
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    with open(root / "severity.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["split"]].append({"path": root / row["path"], "id": Path(row["path"]).stem,
                                      "severity": int(row["severity"])})
    return out


def load_images(rows: list[dict], side: int) -> np.ndarray:
    """Every leaf resized to ``side x side/2`` (its 2:1 shape kept), RGB uint8 ``(N, side/2, side, 3)``."""
    import cv2

    from agripatch.io.images import read_image

    return np.stack([cv2.resize(read_image(row["path"]), (side, side // 2), interpolation=cv2.INTER_AREA)
                     for row in rows])


def to_tensor(images: np.ndarray, mean, std):
    """Normalised float batch, channels-last."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def train_seed(args, seed: int, train: tuple[np.ndarray, np.ndarray], test: np.ndarray) -> dict:
    """Fine-tune one seed and return its test predictions (probabilities per leaf)."""
    import albumentations as A
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from agripatch.engine.loop import seed_everything
    from agripatch.models import create_classifier

    seed_everything(seed)
    model, data_cfg = create_classifier(args.arch, 5, pretrained=True)
    model = model.to(memory_format=torch.channels_last)
    mean, std = data_cfg["mean"], data_cfg["std"]
    augment = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
                         A.ColorJitter(brightness=(0.9, 1.1), contrast=(0.9, 1.1), saturation=(0.9, 1.1),
                                       hue=(-0.01, 0.01), p=0.5)])
    images, labels = train
    steps = math.ceil(len(images) / args.batch)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=args.epochs, warmup_epochs=1,
                                       step_on_epochs=False, updates_per_epoch=steps)
    rng = np.random.default_rng(seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(images))
        total = 0.0
        for step in range(steps):
            idx = order[step * args.batch:(step + 1) * args.batch]
            batch = np.stack([augment(image=images[i])["image"] for i in idx])
            x, y = to_tensor(batch, mean, std), torch.from_numpy(labels[idx])
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step_update(epoch * steps + step + 1)
            total += loss.item() * len(idx)
        print(f"  seed {seed} epoch {epoch + 1}/{args.epochs}: train loss {total / len(images):.4f} "
              f"({(time.time() - start) / 60:.1f} min)", flush=True)
    model.eval()
    probs = []
    with torch.inference_mode():
        for i in range(0, len(test), 32):
            probs.append(torch.softmax(model(to_tensor(test[i:i + 32], mean, std)), dim=1).numpy())
    return {"seed": seed, "train_minutes": (time.time() - start) / 60, "cpu": cpu_description(),
            "probs": np.concatenate(probs).round(5).tolist()}


def map_classes(record: dict, test_rows: list[dict]) -> np.ndarray:
    """The shipped map's class for each test leaf (its stored share on seed 0, the package's cut-points)."""
    from agripatch.pipeline.severity import SHIPPED_CUTS, SeverityBins

    share = dict(zip(record["leaf_test"]["ids"], record["leaf_test"]["pred_share"]))
    return SeverityBins(SHIPPED_CUTS).classify(np.array([share[r["id"]] for r in test_rows]))


def map_probabilities(record: dict, test_rows: list[dict]) -> np.ndarray:
    """The shipped map's class probabilities for each test leaf: a logistic regression of the class on the log of its
    share (sklearn's defaults), fitted on the map's shares of the 1,192 train leaves, so nothing is chosen on test."""
    from sklearn.linear_model import LogisticRegression

    train, test = record["leaf_train"], record["leaf_test"]
    share = dict(zip(test["ids"], test["pred_share"]))
    feature = lambda s: np.log(np.asarray(s, dtype=np.float64) + 0.1).reshape(-1, 1)  # noqa: E731
    model = LogisticRegression(max_iter=2000).fit(feature(train["pred_share"]), train["severity"])
    return model.predict_proba(feature([share[r["id"]] for r in test_rows]))


def main() -> None:
    """Train the seeds, score them, print and store."""
    import torch

    from agripatch.io.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arch", default="mobilenetv2_100")
    parser.add_argument("--side", type=int, default=256, help="long side of the leaf (the short side is half)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_leaves(LEAF)
    out = REPO / "benchmarks" / "results" / "severity" / f"classifier_{args.arch}_{args.side}.json"
    stored = json.loads(out.read_text()) if out.is_file() else {}
    same = stored.get("epochs") == args.epochs and stored.get("lr") == args.lr  # resume only the same training
    done = {r["seed"]: r for r in stored.get("runs", [])} if same else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    train = test_images = None
    if any(seed not in done for seed in seeds):  # decode the leaves only when a seed still has to train
        train = (load_images(rows["train"], args.side),
                 np.array([r["severity"] for r in rows["train"]], dtype=np.int64))
        test_images = load_images(rows["test"], args.side)
    runs = []
    payload = {"arch": args.arch, "side": [args.side, args.side // 2], "epochs": args.epochs, "lr": args.lr,
               "threads": args.threads, "test_ids": [r["id"] for r in rows["test"]], "runs": runs}
    for seed in seeds:
        runs.append(done.get(seed) or train_seed(args, seed, train, test_images))
        atomic_write_text(out, json.dumps(payload))  # after every seed: a killed run resumes from the seeds it finished
    payload["summary"] = summarise(runs, rows["test"])
    payload["summary"]["gmacs_per_leaf"] = classifier_gmacs(args.arch, args.side)
    atomic_write_text(out, json.dumps(payload))
    print_summary(payload)
    print(f"wrote {out.relative_to(REPO)}")


def classifier_gmacs(arch: str, side: int) -> float:
    """MACs of one leaf through the classifier at ``side x side/2``, in billions."""
    from agripatch.models import create_classifier
    from agripatch.pipeline.macs import count_macs

    return count_macs(create_classifier(arch, 5, pretrained=False)[0], (1, 3, side // 2, side)) / 1e9


def summarise(runs: list[dict], test_rows: list[dict]) -> dict:
    """Accuracies of the classifier, the map's cuts and the two combined, paired on the same test leaves."""
    from agripatch.engine.stats import paired_comparison

    truth = np.array([r["severity"] for r in test_rows])
    probs = np.array([r["probs"] for r in runs])  # [seeds, leaves, classes]
    record = json.loads(MAP_RECORD.read_text())
    from_map = map_probabilities(record, test_rows)
    correct = {"classifier": probs.argmax(axis=2) == truth,
               "map_cuts": np.broadcast_to(map_classes(record, test_rows) == truth, (len(runs), truth.size)),
               "classifier_x_map": (np.log(probs + 1e-9) + np.log(from_map + 1e-9)).argmax(axis=2) == truth}
    out: dict = {"seeds": [r["seed"] for r in runs], "leaves": int(truth.size),
                 "either_right": float((correct["classifier"] | correct["map_cuts"]).mean())}
    for name, right in correct.items():
        right = right.astype(float)
        row = {"accuracy": float(right.mean()), "per_seed": right.mean(axis=1).tolist()}
        if name != "map_cuts":
            paired = paired_comparison(right, correct["map_cuts"].astype(float))
            row.update(against_map_points=100 * paired.difference,
                       ci95_points=[100 * paired.ci_low, 100 * paired.ci_high], gained=paired.only_a,
                       lost=paired.only_b)
        out[name] = row
    return out


def print_summary(payload: dict) -> None:
    """One line per reader of the severity class."""
    summary = payload["summary"]
    side = payload["side"]
    print(f"\n{payload['arch']} on the whole leaf at {side[0]}x{side[1]}, {payload['epochs']} epochs, last epoch "
          f"kept, seeds {summary['seeds']}; trained on {payload['runs'][0]['cpu']['model']}; {summary['leaves']} leaf/ test leaves, "
          f"target 0.88; {summary['gmacs_per_leaf']:.3f} GMACs a leaf")
    for name, label in (("map_cuts", "shipped map, cut-points"), ("classifier", "classifier"),
                        ("classifier_x_map", "classifier x map (product of class probabilities)")):
        row = summary[name]
        line = f"  {label:52s} {row['accuracy']:.4f} (per seed {' / '.join(f'{v:.4f}' for v in row['per_seed'])})"
        if "ci95_points" in row:
            line += (f"  against the map {row['against_map_points']:+.2f} [{row['ci95_points'][0]:+.2f}, "
                     f"{row['ci95_points'][1]:+.2f}] ({row['gained']} / {row['lost']} leaves)")
        print(line)
    print(f"  either the classifier or the map right: {summary['either_right']:.4f}")


if __name__ == "__main__":
    main()
