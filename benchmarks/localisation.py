"""Where the selected patches land: on real lesions (coffee masks), on synthetic lesions among distractors,
always beside the same box placed at the photo centre and at random.

    python -m benchmarks.localisation --model RUN/model.pt --coffee ../shared/data/coffee_bracol --split test
    python -m benchmarks.localisation --model RUN/model.pt --synth SYNTH_DIR        # datasets synth --distractors
    python -m benchmarks.localisation --model RUN/model.pt --folder PHOTOS --sheet sheet.png   # by-eye review

Each model is judged with every cell prior in ``--priors`` (the same trained networks, only the ranking
changes). For every diseased photo: does the top box land on a lesion (>= 1% lesion pixels, see
agripatch.engine.lesions), does any of the K boxes, does a centre box of the top box's size, and how
often would a random box of that size. Prints a table, writes JSON (``--out``), and with ``--sheet`` a
contact sheet of photos with their numbered boxes for counting by eye.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]


def coffee_items(root: Path, split: str) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """(photo, lesion mask, leaf mask) of every diseased coffee high-res leaf of ``split``."""
    from PIL import Image

    items = []
    with open(root / "highres" / "splits.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != split or row["label"] == "healthy":
                continue
            mask = np.asarray(Image.open(root / "lesion_masks" / f"{Path(row['path']).stem}.png"))
            items.append((root / "highres" / row["path"], mask == 2, mask >= 1))
    return items


def synth_items(root: Path) -> list[tuple[Path, np.ndarray, None]]:
    """(photo, lesion mask from boxes.csv, None) of every diseased synthetic photo."""
    from agripatch.engine.lesions import boxes_mask
    from agripatch.io.images import read_image

    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    with open(root / "boxes.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["path"], []).append(tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")))
    items = []
    for rel, rel_boxes in sorted(boxes.items()):
        h, w = read_image(root / rel).shape[:2]
        items.append((root / rel, boxes_mask(h, w, rel_boxes), None))
    return items


def bootstrap_ci(values: np.ndarray, seed: int = 0, rounds: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (photos resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(rounds, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def with_prior(bundle, prior: str, symptom_weights: Path | None = None):
    """The model's cascade ranking cells with ``prior`` (``symptom`` adds the package's symptom map when the model
    file has none, or ``symptom_weights``: neither saw the coffee test leaves' masks)."""
    pipeline = bundle.pipeline
    if prior == "symptom" and symptom_weights is not None:
        from agripatch.models.fuse import inference_model
        from agripatch.models.symptom_map import create_symptom_map
        from agripatch.models.weight_files import load_weights
        from agripatch.pipeline.cascade import SymptomReader

        network = create_symptom_map("symptom_map_lite0_s8")
        network.load_state_dict(load_weights(symptom_weights))
        reader = SymptomReader(inference_model(network.eval()), tuple(network.cfg["mean"]), tuple(network.cfg["std"]))
        pipeline = pipeline.with_severity(reader)
    elif prior == "symptom":
        pipeline = pipeline.measuring_severity(True)
    pipeline.config.cell_prior = prior
    return pipeline


def judge(bundle, items, prior: str, min_share: float = 0.01, symptom_weights: Path | None = None) -> dict:
    """Select boxes with ``prior`` on every item and judge them."""
    from agripatch.data.photos import photo_item
    from agripatch.engine.lesions import judge_boxes
    from agripatch.pipeline.boxes import scale_boxes

    pipeline = with_prior(bundle, prior, symptom_weights)
    rows = []
    for path, lesions, leaf in items:
        item = photo_item(path, min_side=pipeline.decode_min_side())
        located = pipeline.locate([item["image"]])
        boxes = scale_boxes(located.boxes[0], item["decoded_hw"], lesions.shape)
        verdict = judge_boxes(boxes, lesions, leaf=leaf, min_share=min_share)
        rows.append({"path": str(path), **verdict.__dict__, "boxes": boxes.round(1).tolist()})
    top1 = np.array([r["top1"] for r in rows], float)
    rand = np.array([r["random_rate"] for r in rows], float)
    summary = {"prior": prior, "photos": len(rows), "top1": top1.mean(), "any_k": np.mean([r["any_k"] for r in rows]),
               "centre": np.mean([r["centre"] for r in rows]), "random": rand.mean(),
               "top1_minus_random": (top1 - rand).mean(), "top1_minus_random_ci": bootstrap_ci(top1 - rand)}
    if leaf is not None:
        summary["leaf_share_top1"] = float(np.mean([r["leaf_share_top1"] for r in rows]))
    return {"summary": {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in summary.items()},
            "photos": rows}


def contact_sheet(bundle, photos: list[Path], path: Path, prior: str, columns: int = 5, tile: int = 320) -> None:
    """Photos with their numbered boxes (1 = top) in a grid, for counting by eye."""
    import cv2

    from agripatch.data.photos import photo_item

    pipeline = with_prior(bundle, prior)
    tiles = []
    for n, photo in enumerate(photos):
        item = photo_item(photo, min_side=pipeline.decode_min_side())
        image = np.ascontiguousarray(item["image"].permute(1, 2, 0).numpy())
        boxes = pipeline.locate([item["image"]]).boxes[0]
        scale = tile / max(image.shape[:2])
        small = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small
        for k, box in reversed(list(enumerate(boxes))):
            x0, y0, x1, y1 = (int(v * scale) for v in box)
            colour = (255, 0, 0) if k == 0 else (255, 255, 0)
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, 3 if k == 0 else 1)
            cv2.putText(canvas, str(k + 1), (x0 + 4, y0 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
        cv2.putText(canvas, str(n), (4, tile - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
        tiles.append(canvas)
    while len(tiles) % columns:
        tiles.append(np.full((tile, tile, 3), 255, np.uint8))
    rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, judge the selections, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--coffee", type=Path, help="coffee_bracol root (highres/, lesion_masks/)")
    source.add_argument("--synth", type=Path, help="a `datasets synth --distractors` folder (boxes.csv)")
    source.add_argument("--folder", type=Path, help="photos without annotations: only --sheet")
    parser.add_argument("--split", default="test")
    parser.add_argument("--priors", default="none,leaf")
    parser.add_argument("--min-share", type=float, default=0.01, help="lesion share of a box that counts as a hit")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--symptom-weights", type=Path, help="the symptom prior reads this map (safetensors of "
                        "symptom_map_lite0_s8) instead of the package's")
    parser.add_argument("--sheet", type=Path, help="also draw a contact sheet of the first --sheet-count photos")
    parser.add_argument("--sheet-count", type=int, default=30)
    parser.add_argument("--sheet-prior", default=None, help="cell prior for the sheet (default: the model's)")
    args = parser.parse_args(argv)

    import torch

    from agripatch.allocator import tune_memory_allocator
    from agripatch.pipeline.bundle import load_model_file

    tune_memory_allocator()
    torch.set_num_threads(os.cpu_count() or 1)
    bundle = load_model_file(args.model)
    stored_prior = bundle.pipeline.config.cell_prior
    if args.folder:
        from agripatch.predict.scan import iter_photos

        photos = [args.folder / rel for rel in iter_photos(args.folder, recursive=True)][: args.sheet_count]
        if not args.sheet:
            sys.exit("--folder needs --sheet")
        contact_sheet(bundle, photos, args.sheet, args.sheet_prior or stored_prior)
        print(f"wrote {args.sheet}")
        return
    items = coffee_items(args.coffee, args.split) if args.coffee else synth_items(args.synth)
    results = {"model": str(args.model), "source": str(args.coffee or args.synth), "split": args.split,
               "min_lesion_share": args.min_share, "by_prior": {},
               "symptom_weights": str(args.symptom_weights) if args.symptom_weights else "the package's"}
    print(f"{'prior':8s} {'photos':>6s} {'top-1':>6s} {'any-K':>6s} {'centre':>6s} {'random':>6s}  top-1 - random [95% CI]")
    for prior in args.priors.split(","):
        judged = judge(bundle, items, prior, args.min_share, args.symptom_weights)
        s = judged["summary"]
        results["by_prior"][prior] = judged
        lo, hi = s["top1_minus_random_ci"]
        print(f"{prior:8s} {s['photos']:6d} {s['top1']:6.3f} {s['any_k']:6.3f} {s['centre']:6.3f} {s['random']:6.3f}  "
              f"{s['top1_minus_random']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    if args.sheet:
        contact_sheet(bundle, [path for path, _, _ in items][: args.sheet_count], args.sheet,
                      args.sheet_prior or stored_prior)
    if args.out:
        from agripatch.io.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(results, indent=1))  # synth_field.py trusts a file that exists
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
