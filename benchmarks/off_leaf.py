"""Does the leaf prior push patches off a diseased fruit? The same run read with the leaf prior as trained, with its
off-leaf classes refitted (``agripatch calibrate``), and without any prior (issues 24 and 25).

    python -m benchmarks.fruit_scenes --out W/close --berry 0.2 0.3   # W = benchmarks/work/fruit_scenes
    agripatch train --recipe ibean --data W/close --out W/close_old_seed0     # run from a checkout before the rule
    agripatch train --recipe ibean --data W/close --out W/close_rule_seed0    # this checkout: fitted by training
    python -m benchmarks.off_leaf --run W/close_old_seed0 --data W/close --name close_seed0 \
        --compare rule=W/close_rule_seed0/model.pt
    python -m benchmarks.off_leaf --pool close_seed0,close_seed1,close_seed2 --name close_3seeds
    python -m benchmarks.off_leaf --top-shares RUN/model.pt --data ../shared/data/ibean/train --every 2 --name ibean

Each variant is a model file: the run's own (``as_trained``), ``agripatch calibrate`` of it (``off_leaf``: the
classes whose own class map points off the leaf on most training photos rank their cells by the class map alone;
exits and temperatures refitted on the validation photos), and the same with ``cell_prior: none`` (``no_prior``).
``agripatch evaluate`` scores each on the run's test photos; each fruit photo's top-1 patch is a hit when it and the
painted berry (its mask, ``<data>_berry_masks/``) share at least half of the smaller of the two. Extra ``--compare`` runs (trained with the rule, for
example) are scored the same way. Paired against ``as_trained`` (bootstrap over photos). Writes
``benchmarks/results/off_leaf/<name>.json``; ``--pool A,B,C --name P`` pools stored runs (seeds on the same test
photos) into ``P.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "work" / "fruit_scenes" / "data"
OUT = REPO / "benchmarks" / "results" / "off_leaf"


def _agripatch(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "agripatch", *args], check=True)


def variants(run: Path, data: Path) -> dict[str, Path]:
    """The three model files of ``run`` (made once; see the module docstring)."""
    from agripatch.io.torchfile import load_object, save_object

    model = run / "model.pt"
    out = {"as_trained": model, "off_leaf": run / "model_off_leaf.pt", "no_prior": run / "model_no_prior.pt"}
    if not out["off_leaf"].is_file():
        _agripatch("calibrate", str(model), "--data", str(data), "--out", str(out["off_leaf"]))
    if not out["no_prior"].is_file():
        obj = load_object(model)
        save_object({**obj, "cascade": {**obj["cascade"], "cell_prior": "none"}}, run / "no_prior_raw.pt")
        _agripatch("calibrate", str(run / "no_prior_raw.pt"), "--data", str(data), "--out", str(out["no_prior"]))
    return out


def evaluate(model: Path, data: Path) -> Path:
    """``agripatch evaluate`` of ``model`` on the test split (cached beside the model file)."""
    where = model.parent / f"eval_{model.stem}"
    if not (where / "summary.json").is_file():
        _agripatch("evaluate", str(model), "--data", str(data), "--split", "test", "--out", str(where))
    return where


def top_patch_hits(model: Path, data: Path, paths: list[str]) -> tuple[dict[str, bool], dict[str, float]]:
    """For each fruit photo of ``paths``: do the top-1 patch and the berry (its mask, :func:`benchmarks.fruit_scenes.
    masks_folder`) share at least half of the smaller of the two (a berry inside the patch, or a patch on a berry
    larger than it)? And the share of the top-1 patch's pixels on the berry."""
    import cv2

    from agripatch.predict.predictor import Predictor
    from benchmarks.fruit_scenes import masks_folder

    fruit = [p for p in paths if (masks_folder(data) / f"{Path(p).stem}.png").is_file()]
    predictor = Predictor.from_file(model, device="cpu", precision="float32")
    results = predictor.run([predictor.item(data / p, i, defer_full=False) for i, p in enumerate(fruit)])
    hits, shares = {}, {}
    for path, result in zip(fruit, results):
        berry = cv2.imread(str(masks_folder(data) / f"{Path(path).stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        h, w = berry.shape
        x0, y0, x1, y1 = (int(round(float(v))) for v in result.boxes[0])
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        inside = int(berry[y0:y1, x0:x1].sum())
        area = max(x1 - x0, 0) * max(y1 - y0, 0)
        hits[path] = inside >= 0.5 * min(int(berry.sum()), area)
        shares[path] = inside / max(area, 1)
    return hits, shares


def read(evaluation: Path) -> dict:
    rows = list(csv.DictReader(open(evaluation / "predictions.csv", newline="")))
    summary = json.loads((evaluation / "summary.json").read_text())
    return {"correct": {r["path"]: r["true"] == r["predicted"] for r in rows}, "true": {r["path"]: r["true"] for r in rows},
            "top1": summary["top1"], "gmacs": summary["mean_gmacs"], "exits": summary["exit_histogram"],
            "all_patches_top1": summary["all_patches_top1"], "baseline_top1": (summary.get("baseline") or {}).get("top1"),
            "refused": (summary.get("refusal") or {}).get("refused_fraction")}


def paired(ours, theirs) -> dict:
    """Ours minus theirs on the same photos ([seeds, photos] or [photos]; the project's paired bootstrap over photos,
    :func:`agripatch.engine.stats.paired_comparison`), in points, with the (photo, seed) pairs gained and lost."""
    from agripatch.engine.stats import paired_comparison

    c = paired_comparison(np.asarray(ours, float), np.asarray(theirs, float))
    return {"difference_points": 100 * c.difference, "ci95_points": [100 * c.ci_low, 100 * c.ci_high],
            "gained": c.only_a, "lost": c.only_b, "photos": c.photos, "seeds": c.seeds}


def top_shares(model: Path, root: Path, name: str, every: int = 1) -> None:
    """Per class of ``root``'s class folders (every ``every``-th photo): the share of photos whose own class map's top
    cell holds under the model's ``leaf_min_share`` plant pixels, and the off-leaf classes that gives (what training
    and ``calibrate`` decide from). Writes ``top_shares_<name>.json``."""
    from agripatch.data.photos import PhotoDataset
    from agripatch.engine.scoring import own_class_top_shares
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.cells import bare_top_cell_shares, off_leaf_classes

    bundle = load_model_file(model)
    bundle.pipeline.eval()
    config = bundle.pipeline.config
    files = [f for c in bundle.classes for f in sorted((root / c).iterdir())
             if f.suffix.lower() in (".jpg", ".jpeg", ".png")][::every]
    dataset = PhotoDataset(root, [f"{f.parent.name}/{f.name}" for f in files],
                           labels=[bundle.classes.index(f.parent.name) for f in files],
                           min_side=config.glance_size, glance_size=config.glance_size)
    shares, labels = own_class_top_shares(bundle.pipeline, dataset)
    bare = {bundle.classes[i]: share for i, share in
            bare_top_cell_shares(shares, labels, len(bundle.classes), config.leaf_min_share).items()}
    out = {"model": str(model), "photos": str(root), "every": every, "leaf_min_share": config.leaf_min_share,
           "photos_per_class": {c: int((labels == i).sum()) for i, c in enumerate(bundle.classes)},
           "bare_top_cell_share": bare,
           "off_leaf_classes": [bundle.classes[c] for c in
                                off_leaf_classes(shares, labels, len(bundle.classes), config.leaf_min_share)]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"top_shares_{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def pool(names: list[str], name: str) -> None:
    """Every variant over several runs' JSONs (seeds: the same test photos), paired against ``as_trained``."""
    runs = [json.loads((OUT / f"{n}.json").read_text()) for n in names]
    out = {"what": "pooled over " + ", ".join(names), "variants": {}}
    for variant in runs[0]["variants"]:
        got = [r["variants"][variant] for r in runs]
        base = [r["variants"]["as_trained"] for r in runs]
        if any(g["paths"] != got[0]["paths"] or g["fruit_paths"] != got[0]["fruit_paths"] for g in got + base):
            raise SystemExit("the pooled runs were scored on other photos: pool seeds of one split only")
        correct = np.array([g["correct"] for g in got], float)  # [seeds, photos]
        hits, shares = (np.array([g[key] for g in got], float) for key in ("top_patch_hits", "top_patch_berry_shares"))
        berry_gain = paired(shares, [b["top_patch_berry_shares"] for b in base])
        out["variants"][variant] = {
            "top1": float(correct.mean()), "gmacs": float(np.mean([g["gmacs"] for g in got])),
            "top1_per_run": [g["top1"] for g in got], "off_leaf_classes": [g["off_leaf_classes"] for g in got],
            "fruit_top1": float(np.mean([g["fruit_top1"] for g in got])),
            "leaf_top1": float(np.mean([g["leaf_top1"] for g in got])),
            "top_patch_on_fruit": float(hits.mean()),
            "top_patch_on_fruit_per_run": [g["top_patch_on_fruit"] for g in got],
            "top_patch_berry_share": float(shares.mean()),
            "top_patch_berry_share_vs_as_trained": {"difference": berry_gain["difference_points"] / 100,
                                                    "ci95": [v / 100 for v in berry_gain["ci95_points"]]},
            "vs_as_trained": paired(correct, [b["correct"] for b in base]),
            "top_patch_vs_as_trained": paired(hits, [b["top_patch_hits"] for b in base]),
        }
        v = out["variants"][variant]
        print(f"{variant:12s} top-1 {v['top1']:.4f} @ {v['gmacs']:.3f} GMACs, top patch on the berry "
              f"{v['top_patch_on_fruit']:.3f} (berry share {v['top_patch_berry_share']:.3f}), vs as trained {v['vs_as_trained']['difference_points']:+.2f} "
              f"{[round(x, 2) for x in v['vs_as_trained']['ci95_points']]}")
    (OUT / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT / (name + '.json')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", help="NAME,NAME,...: pool these stored runs into --name instead of scoring one")
    parser.add_argument("--top-shares", type=Path, metavar="MODEL", help="only count, on --data's class folders, how "
                        "often each class's own top cell is bare (writes top_shares_<name>.json)")
    parser.add_argument("--every", type=int, default=1, help="with --top-shares: every n-th photo")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--name", required=True)
    parser.add_argument("--compare", action="append", default=[], help="NAME=MODEL: another model file to score")
    args = parser.parse_args(argv)
    if args.pool:
        return pool(args.pool.split(","), args.name)
    if args.top_shares:
        return top_shares(args.top_shares, args.data, args.name, args.every)
    if args.run is None:
        parser.error("--run is needed (or --pool)")
    models = variants(args.run, args.data)
    models.update({k: Path(v) for k, v in (c.split("=", 1) for c in args.compare)})
    scored = {name: read(evaluate(model, args.data)) for name, model in models.items()}
    paths = sorted(scored["as_trained"]["correct"])
    fruit_classes = sorted({scored["as_trained"]["true"][p] for p in paths if p.startswith("fruit_")})
    result = {"what": __doc__.split("\n\n")[0], "run": str(args.run), "variants": {}}
    for name, model in models.items():
        s = scored[name]
        hits, berry_share = top_patch_hits(model, args.data, paths)
        from agripatch.pipeline.bundle import load_model_file

        config = load_model_file(model).pipeline.config
        entry = {k: s[k] for k in ("top1", "gmacs", "exits", "all_patches_top1", "baseline_top1", "refused")}
        entry.update({
            "model": str(model), "cell_prior": config.cell_prior, "off_leaf_classes": config.off_leaf_classes,
            "fruit_top1": float(np.mean([s["correct"][p] for p in paths if s["true"][p] in fruit_classes])),
            "leaf_top1": float(np.mean([s["correct"][p] for p in paths if s["true"][p] not in fruit_classes])),
            "top_patch_on_fruit": float(np.mean(list(hits.values()))), "fruit_photos": len(hits),
            "top_patch_berry_share": float(np.mean(list(berry_share.values()))),
            "vs_as_trained": paired([s["correct"][p] for p in paths],
                                    [scored["as_trained"]["correct"][p] for p in paths]),
            "paths": paths, "correct": [bool(s["correct"][p]) for p in paths],
            "fruit_paths": sorted(hits), "top_patch_hits": [bool(hits[p]) for p in sorted(hits)],
            "top_patch_berry_shares": [float(berry_share[p]) for p in sorted(hits)],
        })
        result["variants"][name] = entry
        print(f"{name:12s} top-1 {entry['top1']:.4f} (fruit {entry['fruit_top1']:.3f}, leaves {entry['leaf_top1']:.3f}) "
              f"@ {entry['gmacs']:.3f} GMACs, all patches {entry['all_patches_top1']:.4f}, top patch on the berry "
              f"{entry['top_patch_on_fruit']:.3f} (berry share {entry['top_patch_berry_share']:.3f}), vs as trained {entry['vs_as_trained']['difference_points']:+.2f} "
              f"{[round(v, 2) for v in entry['vs_as_trained']['ci95_points']]}, off-leaf {config.off_leaf_classes}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT / (args.name + '.json')}")


if __name__ == "__main__":
    main()
