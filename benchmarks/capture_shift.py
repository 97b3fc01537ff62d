"""Photos of the trained crop taken another way: does the model still answer them, and answer them right?

    python -m benchmarks.capture_shift --model RUN/model.pt --data ROOT [--split test] [--name NAME]
    python -m benchmarks.capture_shift --compare A1,A2,... --to B1,B2,... --name NAME   # stored runs, paired
    python -m benchmarks.capture_shift --replay NAME --refusal REFUSAL_NAME   # not_a_leaf rules on stored distances
    python -m benchmarks.capture_shift --runs R0,R1,R2 --study results/recipe_default/X.json --name NAME   # clean test, paired

Issue 24 found a model refusing 12% of real photos from field sessions its validation photos did not come from
(mostly ``not_a_leaf``). Other sessions differ in light, white balance, camera and JPEG settings. This makes such
differences on the ``--split`` photos of ``--data`` (photos that chose nothing) and runs each set through the model's
own decision (`agripatch.load(...).predict`, as `predict folder` decides), files written as JPEG (quality 92,
except the JPEG shift itself) into a temporary folder:

exposure -1 / +1 stop (in linear light), warm / cool white balance (red and blue gains 1.12 / 0.88), haze (contrast
x0.7 towards the mean), saturation +30%, JPEG quality 30, blur (Gaussian, sigma 2 px), half resolution (a smaller
camera), and a quarter turn each way (anticlockwise, clockwise: a portrait phone photo of a leaf shot landscape).
With ``--orientation landscape`` the model file is read with ``cascade.photo_orientation`` set so (a copy, in the
temporary folder: what a retrain or `agripatch calibrate` now writes into a model trained on landscape photos); a
turned photo is then read turned back clockwise, so the anticlockwise set comes back as taken and the clockwise one
upside down.

Per set: the share refused (``not_a_leaf`` and ``unsure``), top-1 on all photos and on the answered ones, and every
photo's feature distance and plant share (``.distances.npz``, ``.plant_shares.npz``) so a ``not_a_leaf`` rule can
be replayed offline against the non-leaf sets of ``benchmarks/refusal.py``. Writes ``benchmarks/results/capture_shift/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.io.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "capture_shift"


def _linear(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255.0) ** 2.2


def _srgb(linear: np.ndarray) -> np.ndarray:
    return (np.clip(linear, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def _gains(image: np.ndarray, red: float, blue: float) -> np.ndarray:
    return _srgb(_linear(image) * np.array([red, 1.0, blue], np.float32))


def _saturate(image: np.ndarray, factor: float) -> np.ndarray:
    grey = image.astype(np.float32).mean(axis=2, keepdims=True)
    return np.clip(grey + factor * (image - grey), 0, 255).astype(np.uint8)


#: name -> (change of the RGB uint8 photo, JPEG quality it is saved at)
SHIFTS = {
    "as taken (re-saved)": (lambda x: x, 92),
    "exposure -1 stop": (lambda x: _srgb(_linear(x) * 0.5), 92),
    "exposure +1 stop": (lambda x: _srgb(_linear(x) * 2.0), 92),
    "warm white balance": (lambda x: _gains(x, 1.12, 0.88), 92),
    "cool white balance": (lambda x: _gains(x, 0.88, 1.12), 92),
    "haze (contrast x0.7)": (lambda x: (0.7 * x + 0.3 * x.mean()).astype(np.uint8), 92),
    "saturation +30%": (lambda x: _saturate(x, 1.3), 92),
    "JPEG quality 30": (lambda x: x, 30),
    "blur (sigma 2 px)": (lambda x: cv2.GaussianBlur(x, (0, 0), 2.0), 92),
    "half resolution": (lambda x: cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA), 92),
    "quarter turn": (lambda x: np.ascontiguousarray(np.rot90(x)), 92),
    "quarter turn clockwise": (lambda x: np.ascontiguousarray(np.rot90(x, -1)), 92),
}


def shifted_files(paths: list[Path], folder: Path, change, quality: int) -> list[Path]:
    """Each photo changed and saved as a JPEG in ``folder`` (same order)."""
    from agripatch.io.images import read_image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(paths):
        image = change(read_image(path))
        target = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(target)
    return out


def compare(a: list[str], b: list[str], only: list[str] | None = None) -> dict:
    """Runs A against runs B (run i with run i: the same photos), every shifted set but the re-saved one pooled
    (or the sets ``only``): the share refused by each, and top-1 on all photos paired over photos, sets and runs."""
    from agripatch.engine.stats import paired_comparison

    def pooled(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        runs = [json.loads((RESULTS / f"{n}.json").read_text())["sets"] for n in names]
        keys = [k for k in runs[0] if k != "as taken (re-saved)" and (only is None or k in only)]
        return (np.stack([np.concatenate([r[k]["right"] for k in keys]) for r in runs]).astype(bool),
                np.stack([np.concatenate([r[k]["answered"] for k in keys]) for r in runs]).astype(bool))

    (right_a, answered_a), (right_b, answered_b) = pooled(a), pooled(b)
    sets_a, sets_b = ([json.loads((RESULTS / f"{n}.json").read_text())["sets"] for n in names] for names in (a, b))
    per_set = {key: {f"{label}_{stat}": float(np.mean([r[key][stat] for r in runs]))
                     for label, runs in (("a", sets_a), ("b", sets_b)) for stat in ("refused", "not_a_leaf", "top1_all")}
               for key in sets_a[0]}
    paired = paired_comparison(right_a, right_b)
    given_a, given_b = right_a & answered_a, right_b & answered_b  # what a user gets: answered, and right
    given = paired_comparison(given_a, given_b)
    return {"a": a, "b": b, "photo_sets": int(right_a.shape[1]), "runs": len(a),
            "refused_a": float(1 - answered_a.mean()), "refused_b": float(1 - answered_b.mean()),
            "refused_a_per_run": (1 - answered_a.mean(axis=1)).tolist(),
            "refused_b_per_run": (1 - answered_b.mean(axis=1)).tolist(),
            "top1_a": float(right_a.mean()), "top1_b": float(right_b.mean()), "a_minus_b": paired.difference,
            "ci": [paired.ci_low, paired.ci_high], "gained": int((right_a & ~right_b).sum()),
            "lost": int((~right_a & right_b).sum()), "answered_right_a": float(given_a.mean()),
            "answered_right_b": float(given_b.mean()), "answered_right_a_minus_b": given.difference,
            "answered_right_ci": [given.ci_low, given.ci_high], "per_set_mean_over_runs": per_set}


def against_study(runs: list[Path], study: Path) -> dict:
    """Runs' `evaluate` test answers (``RUN/eval_test/predictions.csv``, run i for seed i) paired with a stored
    ``recipe_default.py`` study's per-seed answers on the same photos: did training another way cost clean photos?"""
    import csv

    from agripatch.engine.stats import paired_comparison

    seeds = json.loads(study.read_text())["per_seed"]
    ours, theirs = [], []
    for run, seed in zip(runs, seeds):
        with open(run / "eval_test" / "predictions.csv", newline="") as handle:
            right = {row["path"]: row["true"] == row["predicted"] for row in csv.DictReader(handle)}
        ours.append([right[p] for p in seed["paths"]])
        theirs.append(seed["correct"])
    paired = paired_comparison(np.array(ours), np.array(theirs))
    return {"runs": [str(r) for r in runs], "study": str(study), "top1_per_run": np.mean(ours, axis=1).tolist(),
            "study_top1_per_seed": np.mean(theirs, axis=1).tolist(), "a_minus_b": paired.difference,
            "ci": [paired.ci_low, paired.ci_high], "gained": paired.only_a, "lost": paired.only_b}


def replay_leafy_thresholds(name: str, refusal_name: str, factors=(1.0, 1.25, 1.5, 2.0), leafy: float = 0.3) -> dict:
    """Would a farther ``not_a_leaf`` threshold for leafy photos (plant share >= ``leafy``) spare the shifted leaves
    without letting non-leaf photos through? Replayed on run ``name``'s stored distances and plant shares and on
    ``benchmarks/refusal.py``'s sets of the same model (``REFUSAL_NAME.distances.npz`` here)."""
    run = json.loads((RESULTS / f"{name}.json").read_text())
    far, near = run["distance_threshold"], run["near_threshold"]
    sets = {}
    for stem in (name, refusal_name):
        distances, shares = np.load(RESULTS / f"{stem}.distances.npz"), np.load(RESULTS / f"{stem}.plant_shares.npz")
        sets.update({key: (distances[key], shares[key]) for key in distances.files})
    out = {"far": far, "near": near, "leafy": leafy, "distance_percentiles_0_50_100": {}, "refused": {}}
    for key, (d, _) in sets.items():
        out["distance_percentiles_0_50_100"][key] = np.percentile(d, [0, 50, 100]).tolist()
    for factor in factors:
        out["refused"][str(factor)] = {
            key: float(((d > np.where(s >= leafy, far * factor, far)) | ((d > near) & (s < 0.05))).mean())
            for key, (d, s) in sets.items()}
    return out


def with_orientation(model: Path, orientation: str | None, refusal_views: bool = False,
                     exposure_data: Path | None = None) -> Path:
    """``model``, or a copy of it (in the temporary folder) that reads photos in ``orientation`` and, with
    ``refusal_views``, judges leafy photos on their turned glances as its recipe's quarter turns allow
    (``refusal.view_turns``, what a retrain or `agripatch calibrate` now writes; thresholds kept); with
    ``exposure_data`` (a dataset root), also on their glance re-exposed to the level of that dataset's training
    photos (``refusal.view_exposure``, metered as training and calibrate meter it)."""
    if orientation is None and not refusal_views and exposure_data is None:
        return model
    import atexit
    import shutil

    import yaml

    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.refusal import trained_turns

    obj = load_object(model)
    if orientation is not None:
        obj["cascade"] = {**obj["cascade"], "photo_orientation": orientation}
    if refusal_views:
        turns = trained_turns((yaml.safe_load(obj["recipe"]).get("augment") or {}).get("train"))
        obj["refusal"] = {**obj["refusal"], "view_turns": list(turns)}
    if exposure_data is not None:
        from agripatch.engine.scoring import median_exposure, split_dataset
        from agripatch.pipeline.bundle import load_model_file

        level = median_exposure(split_dataset(load_model_file(model), exposure_data, "train", glance_only=True))
        obj["refusal"] = {**obj["refusal"], "view_exposure": level}
    folder = tempfile.mkdtemp(prefix="oriented-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return save_object(obj, Path(folder) / "model.pt")


def main(argv: list[str] | None = None) -> None:
    """Score every shifted set and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path, help="dataset root with splits.csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--name", default=None)
    parser.add_argument("--compare", default=None, help="comma-separated stored names (A)")
    parser.add_argument("--to", default=None, help="comma-separated stored names (B), run i paired with A's run i")
    parser.add_argument("--replay", default=None, help="a stored name: replay not_a_leaf rules on its distances")
    parser.add_argument("--refusal", default=None, help="with --replay: the same model's refusal.py output stem here")
    parser.add_argument("--runs", default=None, help="comma-separated run folders, with --study: their clean test "
                        "answers paired with a recipe_default.py study's seeds")
    parser.add_argument("--study", type=Path, default=None)
    parser.add_argument("--sets", default=None, help="with --compare: pool only these comma-separated shifted sets")
    parser.add_argument("--orientation", choices=["any", "landscape", "portrait"], default=None,
                        help="read the model with cascade.photo_orientation set to this (a temporary copy)")
    parser.add_argument("--refusal-views", action="store_true",
                        help="read the model with refusal.view_turns set from its recipe (a temporary copy)")
    parser.add_argument("--exposure-view", action="store_true",
                        help="read the model with refusal.view_exposure metered on --data's training photos "
                             "(a temporary copy)")
    args = parser.parse_args(argv)
    if args.runs:
        result = against_study([Path(r) for r in args.runs.split(",")], args.study)
        print(f"clean test top-1 {result['top1_per_run']} against the study's {result['study_top1_per_seed']}: "
              f"{100 * result['a_minus_b']:+.2f} [{100 * result['ci'][0]:+.2f}, {100 * result['ci'][1]:+.2f}] points "
              f"({result['gained']} gained / {result['lost']} lost)")
        atomic_write_text(RESULTS / f"{args.name or 'against_study'}.json", json.dumps(result, indent=1) + "\n")
        return
    if args.replay:
        result = replay_leafy_thresholds(args.replay, args.refusal)
        for factor, rates in result["refused"].items():
            print(f"far x{factor} above {result['leafy']:.0%} plant pixels: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
        atomic_write_text(RESULTS / f"{args.replay}_leafy_replay.json", json.dumps(result, indent=1) + "\n")
        return
    if args.compare:
        result = compare(args.compare.split(","), args.to.split(","), args.sets.split(",") if args.sets else None)
        print(f"{result['photo_sets']} shifted photos x {result['runs']} runs: refused {result['refused_a']:.3f} against "
              f"{result['refused_b']:.3f}; top-1 {result['top1_a']:.4f} against {result['top1_b']:.4f} "
              f"({100 * result['a_minus_b']:+.2f} [{100 * result['ci'][0]:+.2f}, {100 * result['ci'][1]:+.2f}] points, "
              f"{result['gained']} gained / {result['lost']} lost); answered and right {result['answered_right_a']:.4f} "
              f"against {result['answered_right_b']:.4f} ({100 * result['answered_right_a_minus_b']:+.2f} "
              f"[{100 * result['answered_right_ci'][0]:+.2f}, {100 * result['answered_right_ci'][1]:+.2f}] points)")
        print("| set | refused A / B | not_a_leaf A / B | top-1 A / B |\n|---|---|---|---|")
        for key, m in result["per_set_mean_over_runs"].items():
            print(f"| {key} | {m['a_refused']:.3f} / {m['b_refused']:.3f} | {m['a_not_a_leaf']:.3f} / {m['b_not_a_leaf']:.3f} "
                  f"| {m['a_top1_all']:.4f} / {m['b_top1_all']:.4f} |")
        atomic_write_text(RESULTS / f"{args.name or 'compare'}.json", json.dumps(result, indent=1) + "\n")
        return
    if args.model is None or args.data is None:
        parser.error("--model and --data are needed (or --compare and --to)")

    import agripatch
    from agripatch.data.splits import read_splits_csv

    model = agripatch.load(with_orientation(args.model, args.orientation, args.refusal_views,
                                            args.data if args.exposure_view else None), device="cpu")
    rows = [row for row in read_splits_csv(args.data / "splits.csv") if row.split == args.split]
    paths, labels = [args.data / row.path for row in rows], [row.label for row in rows]
    result = {"model": str(args.model), "data": str(args.data), "split": args.split, "photos": len(paths), "sets": {},
              "photo_orientation": model._predictor.orientation,
              "refusal_view_turns": list(getattr(model._predictor.refusal, "view_turns", ()) or ()),
              "refusal_view_exposure": float(getattr(model._predictor.refusal, "view_exposure", 0.0) or 0.0)}
    distances, shares = {}, {}
    print("| photos | refused | not_a_leaf | unsure | top-1 all | top-1 answered |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (change, quality)) in enumerate(SHIFTS.items()):
            records = model.predict(shifted_files(paths, Path(tmp) / str(i), change, quality))
            decisions = np.array([r.get("decision") for r in records])
            right = np.array([r.get("label") == label for r, label in zip(records, labels)])
            answered = ~np.isin(decisions, ["not_a_leaf", "unsure"])
            entry = {"refused": float(1 - answered.mean()), "not_a_leaf": float(np.mean(decisions == "not_a_leaf")),
                     "unsure": float(np.mean(decisions == "unsure")), "top1_all": float(right.mean()),
                     "top1_answered": float(right[answered].mean()) if answered.any() else float("nan"),
                     "right": right.astype(int).tolist(), "answered": answered.astype(int).tolist(),
                     "judged_on_views": int(sum(1 for r in records if r.get("refusal_macs"))),
                     "mean_refusal_gmacs": float(np.mean([r.get("refusal_macs") or 0 for r in records])) / 1e9,
                     "mean_gmacs": float(np.mean([r.get("macs", 0) for r in records])) / 1e9}
            result["sets"][name] = entry
            distances[name] = np.array([r.get("ood_distance", np.nan) for r in records], float)
            shares[name] = np.array([r.get("plant_share", np.nan) for r in records], float)
            print(f"| {name} | {entry['refused']:.3f} | {entry['not_a_leaf']:.3f} | {entry['unsure']:.3f} | "
                  f"{entry['top1_all']:.4f} | {entry['top1_answered']:.4f} |")
    refusal = model._predictor.refusal
    if refusal is not None:
        result["distance_threshold"] = refusal.distance_threshold
        result["near_threshold"] = refusal.near_threshold
    name = args.name or args.model.parent.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(result, indent=1) + "\n")
    np.savez(RESULTS / f"{name}.distances.npz", **{k.replace(" ", "_"): v for k, v in distances.items()})
    np.savez(RESULTS / f"{name}.plant_shares.npz", **{k.replace(" ", "_"): v for k, v in shares.items()})
    print(f"wrote {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
