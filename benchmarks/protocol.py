"""One benchmark protocol for every dataset: held-out test photos, several training seeds, paired comparisons.

    python -m benchmarks.protocol --dataset coffee_highres                  # every config of the dataset, all seeds
    python -m benchmarks.protocol --dataset ibean --configs cascade,baseline-224
    python -m benchmarks.protocol --dataset ibean --report                    # only regenerate the table from JSON
    python -m benchmarks.protocol --dataset coffee_highres --folds 5 --configs cascade,baseline-160

Protocol (the same for every dataset):
- the test photos are fixed: the official test split where the dataset has one (coffee), else a seeded
  stratified 20% (iBean, PlantVillage-mini); they never choose anything;
- each configuration trains once per seed (default 3) on the rest, whose own validation split (the official
  one, else a stratified 10% of it) picks every stage's best epoch and the exit thresholds;
- or, with --folds K, a stratified K-fold cross-validation over all the dataset's photos (official split
  ignored): fold k is the test split of the run trained with seed k, and 10% of the rest its validation
  split, so every photo is tested once, by a model that chose nothing on it (more test photos than one
  official split has, for comparisons a small test split cannot settle); --repeats R trains every fold R
  times (seeds k, k+K, ...), so training noise enters the interval as seeds do;
- every model is scored on the test photos (`agripatch evaluate`, which also writes per-photo predictions);
- configurations are compared photo by photo over all seeds: accuracy difference with a 95% bootstrap
  interval over photos and the exact McNemar test (agripatch.engine.stats); "better" needs the interval to
  exclude zero.

Every training and evaluation runs in a fresh `agripatch` process (memory never piles up across runs). Runs
resume after a kill (training resumes; finished evaluations are kept), results go to
benchmarks/results/protocol/<dataset>.json after every run, and the markdown table
(benchmarks/results/protocol/<dataset>.md) is always regenerated from that JSON.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.readme_blocks import write_block

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agripatch.pipeline.exits import (  # noqa: E402
    ExitPolicy,
    ExitOutputs,
    choose_thresholds,
    simulate_exits,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "protocol"

BASELINE_ONLY = ["stages.anchornet.enabled=false", "stages.patches.enabled=false", "stages.baseline.enabled=true",
                 "cascade.k=1", "cascade.thresholds=[1,0]", "cascade.full_image_exit=false"]
#: The cascade alone, no baseline trained (so no full-image exit, which reads photos with it; that exit is measured
#: by full_image_exit.py on these same runs).
NO_BASELINE = ["stages.baseline.enabled=false", "cascade.full_image_exit=false"]


S8 = "models.anchornet.arch=anchornet_mbv2_s8"
S16 = "models.anchornet.arch=anchornet_mbv2_s16"
LESION_MASKS = f"lesions.masks={SHARED / 'coffee_bracol' / 'lesion_masks'}"
P160 = "cascade.patch_size=160"


def _baseline(arch: str, size: int) -> list[str]:
    return [*BASELINE_ONLY, f"models.baseline.arch={arch}", f"data.baseline_size={size}"]


#: dataset -> source folder, official split file (or None), recipe, and the configurations (name -> overrides).
DATASETS: dict[str, dict] = {
    "ibean": {
        "source": "ibean/train", "splits": None, "recipe": "ibean",
        "configs": {"cascade": [*NO_BASELINE],
                    # coffee_highres's stride-16 AnchorNet on iBean (ablation: no gain, so `ibean` keeps stride 8)
                    "cascade-s16": [*NO_BASELINE, S16],
                    **{f"baseline-{s}": _baseline("mobilenetv2_100", s) for s in (128, 160, 224, 320)}},
        "budgets": [0.09],  # 30% of the most accurate baseline's cost (mobilenetv2_100@224, 0.299 GMACs)
    },
    "coffee_highres": {
        "source": "coffee_bracol/highres", "splits": "coffee_bracol/highres/splits.csv", "recipe": "coffee_highres",
        "configs": {"cascade": [*NO_BASELINE],
                    # the recipe until this round: the same 3 regions read at 160 px (README); every ablation below
                    # and every older one in the JSON read 160-px patches too
                    "cascade-p160": [*NO_BASELINE, P160],
                    # the `coffee` recipe (stride 8), used here before coffee_highres existed
                    "cascade-s8": [*NO_BASELINE, S8, P160],
                    # `coffee` taught where lesions are by the masks (train split only)
                    "cascade-masks": [*NO_BASELINE, S8, LESION_MASKS, P160],
                    **{f"baseline-{s}": _baseline("mobilenetv2_100", s) for s in (160, 224, 320, 448, 512)},
                    # AnchorNet and the patch classifier learn from the same seed's @512 baseline (run it first)
                    "cascade-distil": [*NO_BASELINE, P160,
                                       "distill.teacher={runs}/baseline-512/seed{seed}/model.pt"]},
        "budgets": [0.3, 0.47],  # the cost of the 224 baseline; 30% of the most accurate one (@512, 1.565 GMACs)
    },
    "coffee_leaf": {
        "source": "coffee_bracol/leaf", "splits": "coffee_bracol/leaf/splits.csv", "recipe": "coffee",
        "configs": {"cascade": [*NO_BASELINE],
                    # masks exist for the high-res leaves only (the same ids, at twice the size): a third of them
                    "cascade-masks": [*NO_BASELINE, LESION_MASKS],
                    # the coffee_highres recipe's AnchorNet on these 512x256 leaves (ablation)
                    "cascade-s16": [*NO_BASELINE, S16],
                    **{f"baseline-{s}": _baseline("mobilenetv2_100", s) for s in (160, 224, 256)}},
        "budgets": [0.117],  # 30% of the most accurate baseline's cost (mobilenetv2_100@256, 0.391 GMACs)
    },
    "plantvillage_mini": {
        "source": "plantvillage_mini", "splits": None, "recipe": "plantvillage",
        "configs": {"cascade": [*NO_BASELINE],
                    # the recipe until this round (stride-8 AnchorNet); `cascade-pre` in the JSON is too
                    "cascade-s8": [*NO_BASELINE, S8],
                    **{f"baseline-{s}": _baseline("mobilenetv2_100", s) for s in (128, 160, 224)}},
        "budgets": [0.09],  # 30% of mobilenetv2_100@224
    },
}


def link_classes(source: Path, root: Path) -> Path:
    """``root`` with a symlink to every class folder of the read-only ``source``."""
    if not source.is_dir():
        sys.exit(f"{source} is not here: this benchmark needs ../shared/data beside the checkout")
    root.mkdir(parents=True, exist_ok=True)
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        link = root / class_dir.name
        if not link.exists():
            link.symlink_to(class_dir.resolve(), target_is_directory=True)
    return root


def validation_root(source: Path, root: Path, val: float = 0.2, seed: int = 0) -> Path:
    """``root`` linking ``source``'s class folders, with a stratified ``val`` split and no test split: the
    split the training-speed and GPU benchmarks share, so their validation top-1 can be set side by side."""
    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import make_splits, write_splits_csv

    root = link_classes(source, root)
    if not (root / "splits.csv").is_file():
        write_splits_csv(make_splits(scan_image_folder(root), val=val, test=0.0, seed=seed), root / "splits.csv")
    return root


def prepare_root(dataset: str, work: Path) -> Path:
    """A writable dataset root: links to the read-only class folders plus the protocol's splits.csv."""
    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import make_splits, write_splits_csv

    spec = DATASETS[dataset]
    root = link_classes(SHARED / spec["source"], work / dataset / "data")
    target = root / "splits.csv"
    if not target.is_file():
        if spec["splits"]:
            target.write_text((SHARED / spec["splits"]).read_text())
        else:  # a fixed 20% test split, and 10% of the rest for validation (seed 0 for both: the same photos)
            write_splits_csv(make_splits(scan_image_folder(root), val=0.08, test=0.2, seed=0), target)
    return root


#: the share of each cross-validation fold's training side kept for validation (best epochs, exit thresholds)
FOLD_VAL = 0.1


def prepare_fold_root(dataset: str, folds: int, fold: int, work: Path) -> Path:
    """A writable dataset root for fold ``fold`` of the ``folds``-fold cross-validation over every photo."""
    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import make_fold_splits, write_splits_csv

    root = link_classes(SHARED / DATASETS[dataset]["source"], work / f"{dataset}_cv{folds}" / f"fold{fold}" / "data")
    if not (root / "splits.csv").is_file():
        write_splits_csv(make_fold_splits(scan_image_folder(root), folds=folds, fold=fold, val=FOLD_VAL, seed=0),
                         root / "splits.csv")
    return root


def models_key(pattern: str) -> str:
    """A short stable name for the set of model files ``pattern`` names, so caches of evaluations are kept per
    set (models retrained later are never read from an older set's cache)."""
    return hashlib.sha1(pattern.encode()).hexdigest()[:10]


def _agripatch(*args: str) -> None:
    """One agripatch command in a fresh process (each run gets its own memory; a failure stops the protocol)."""
    subprocess.run([sys.executable, "-m", "agripatch", *args], check=True)


def run_one(dataset: str, config: str, seed: int, root: Path, runs: Path) -> dict:
    """Train (or resume) one configuration with one seed under ``runs`` and score it on the test split."""
    spec = DATASETS[dataset]
    run = runs / config / f"seed{seed}"
    if not (run / "eval_test" / "summary.json").is_file():
        start = time.perf_counter()
        overrides = [o.replace("{seed}", str(seed)).replace("{runs}", str(runs)) for o in spec["configs"][config]]
        train_and_evaluate(spec["recipe"], root, run, seed, overrides)
        (run / "wall_minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.2f}\n")
    return read_run(run, config, spec.get("budgets", ()))


def train_and_evaluate(recipe: str, root: Path, run: Path, seed: int, overrides: list[str]) -> Path:
    """Train ``recipe`` with ``seed`` and ``overrides`` under ``run`` (resumed after a kill, skipped when its
    model file exists), then evaluate it on ``root``'s test split unless already done; returns the evaluation."""
    evaluation = run / "eval_test"
    if (evaluation / "summary.json").is_file():
        return evaluation
    _agripatch("evaluate", str(train_run(recipe, root, run, seed, overrides)), "--data", str(root), "--split", "test",
               "--out", str(evaluation))
    return evaluation


def train_run(recipe: str, root: Path, run: Path, seed: int, overrides: list[str]) -> Path:
    """``run``'s model file: ``recipe`` trained with ``seed`` and ``overrides`` on ``root`` (resumed after a kill,
    skipped when the model file exists)."""
    if not (run / "model.pt").is_file():
        resume = ["--resume"] if (run / "recipe.yaml").is_file() else []
        _agripatch("train", "--recipe", recipe, "--data", str(root), "--out", str(run), "--seed", str(seed),
                   *resume, *overrides)
    return run / "model.pt"


def _train_minutes(run: Path) -> dict[str, float]:
    minutes: dict[str, float] = {}
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            minutes[row["stage"]] = minutes.get(row["stage"], 0.0) + float(row["seconds"]) / 60
    return minutes


def read_run(run: Path, config: str, budgets=()) -> dict:
    """Per-photo correctness of every model of a finished run, with its cost; a cascade also at each MAC
    ``budget`` (GMACs), with exits set without labels as `predict folder --budget` sets them."""
    summary = json.loads((run / "eval_test" / "summary.json").read_text())
    with open(run / "eval_test" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = [row["path"] for row in rows]
    models = {}
    if config.startswith("baseline"):
        b = summary["baseline"]
        models[f"{b['arch']}@{b['input_size']}"] = {
            "correct": [int(r["baseline_predicted"] == r["true"]) for r in rows], "gmacs": b["mean_gmacs"]}
    else:
        saved = np.load(run / "eval_test" / "stage_probs.npz")
        labels, probs = saved["labels"], saved["probs"]
        models["cascade"] = {"correct": [int(r["predicted"] == r["true"]) for r in rows], "gmacs": summary["mean_gmacs"],
                             "thresholds": summary["thresholds"]}
        models["glance only"] = {"correct": (probs[:, 0].argmax(1) == labels).astype(int).tolist(),
                                 "gmacs": summary["stage_gmacs"][0]}
        models["all patches"] = {"correct": (probs[:, -1].argmax(1) == labels).astype(int).tolist(),
                                 "gmacs": summary["stage_gmacs"][-1]}
        for budget in budgets:
            choice = choose_thresholds(ExitPolicy(budget_gmacs=budget), probs.shape[1],
                                       ExitOutputs(probs, saved["stage_macs"]))
            predicted, _, macs = simulate_exits(probs, saved["stage_macs"], choice.thresholds)
            models[f"budget {budget:g} GMACs"] = {"correct": (predicted == labels).astype(int).tolist(),
                                                  "gmacs": float(np.mean(macs)) / 1e9, "thresholds": choice.thresholds}
    return {"paths": paths, "models": models, "train_minutes": _train_minutes(run)}


def environment() -> dict:
    """Package versions and machine, recorded beside the numbers."""
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _models(results: dict) -> dict[str, dict]:
    """model label -> {correct [seeds, photos], gmacs per seed} across configs (photos aligned by path).

    A cross-validation's folds test different photos, so the K runs of one repetition (seeds rK .. rK+K-1)
    are joined into one row of every photo (its cost the mean over photos); only complete repetitions count."""
    folds = results.get("folds", 0)
    out: dict[str, dict] = {}
    for config, seeds in results["runs"].items():
        groups: dict[int, list[dict]] = {}
        for seed, run in sorted(seeds.items(), key=lambda kv: int(kv[0])):
            groups.setdefault(int(seed) // folds if folds else int(seed), []).append(run)
        for runs in (g for g in groups.values() if not folds or len(g) == folds):
            order = np.argsort(np.concatenate([run["paths"] for run in runs]))
            photos = [len(run["paths"]) for run in runs]
            for name in runs[0]["models"]:
                label = name if re.fullmatch(r"baseline-\d+", config) else f"{config}: {name}"
                entry = out.setdefault(label, {"correct": [], "gmacs": [], "config": config})
                entry["correct"].append(np.concatenate([run["models"][name]["correct"] for run in runs])[order])
                entry["gmacs"].append(float(np.average([run["models"][name]["gmacs"] for run in runs], weights=photos)))
    return out


def _design(results: dict, photos: int, seeds: int, most: int) -> str:
    """How many photos were tested how often: "N test photos x S seeds" or the cross-validation's folds
    (``seeds`` the fewest repeats of any model, ``most`` the most; a comparison uses the repeats both have)."""
    if not results.get("folds"):
        return f"{photos} test photos x {seeds} seeds"
    if most == 1:
        times = "once"
    elif seeds < most:
        times = f"{seeds} to {most} times (a training seed each; a comparison uses the repeats both models have)"
    else:
        times = f"{seeds} times (a training seed each)"
    return f"{photos} photos, each tested {times} across {results['folds']} folds"


def report(results: dict) -> str:
    """The markdown table: every model's accuracy over seeds, its cost, and paired comparisons."""
    from agripatch.engine.stats import paired_comparison

    models = _models(results)
    lines = [f"# {results['dataset']}: {results['protocol']}", "",
             "| model | seeds | test photos | top-1 (mean over seeds) | per seed | GMACs/img |", "|---|---|---|---|---|---|"]
    for label, m in sorted(models.items(), key=lambda kv: np.mean(kv[1]["gmacs"])):
        acc = [float(np.mean(c)) for c in m["correct"]]
        lines.append(f"| {label} | {len(acc)} | {len(m['correct'][0])} | {np.mean(acc):.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in acc)} | {np.mean(m['gmacs']):.3f} |")
    baselines = {k: v for k, v in models.items() if v["config"].startswith("baseline")}
    cascades = {k: v for k, v in models.items() if not v["config"].startswith("baseline")}
    if baselines and cascades:
        lines += ["", "Paired comparisons (A - B on the same photos and seeds; 95% bootstrap interval over photos; "
                  "exact McNemar on pooled discordant pairs):", "",
                  "| A | B | A top-1 | B top-1 | A - B | 95% CI | only A right | only B right | McNemar p | verdict | A GMACs / B GMACs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for a_label, a in cascades.items():
            for b_label, b in baselines.items():
                seeds = min(len(a["correct"]), len(b["correct"]))
                c = paired_comparison(np.stack(a["correct"][:seeds]), np.stack(b["correct"][:seeds]))
                lines.append(f"| {a_label} | {b_label} | {c.accuracy_a:.4f} | {c.accuracy_b:.4f} | {c.difference:+.4f} | "
                             f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.only_a} | {c.only_b} | {c.p_mcnemar:.3g} | "
                             f"{c.verdict} | {np.mean(a['gmacs']) / np.mean(b['gmacs']):.2f} |")
    return "\n".join(lines) + "\n"


EXIT_RULES = REPO / "benchmarks" / "results" / "exit_rules" / "cascade24.json"


FULL_IMAGE_EXIT = REPO / "benchmarks" / "results" / "full_image_exit"
SYMPTOM_PRIOR = REPO / "benchmarks" / "results" / "symptom_prior"
#: `last_epoch.py`'s replays: each recipe's runs with the patch stage's last epoch, as the recipes now train
LAST_EPOCH = REPO / "benchmarks" / "results" / "recipe_default" / "last_epoch.json"


def _recipe_default(dataset: str, cascade: dict, rules: dict, runs: dict) -> tuple[dict, str, str, str]:
    """What the dataset's recipe gives by default: (correct [seeds, photos] and gmacs, exits, ECE, refused).

    Where the recipe turns the full-image exit on, its runs in ``FULL_IMAGE_EXIT`` (the same seeds and test photos
    as the protocol's, aligned by path); else the protocol's "cascade" runs with the exit rule study's ECE and
    refusals (``EXIT_RULES``) where the dataset was rerun with it; where the recipe ranks cells by the symptom map,
    its retrained runs in ``SYMPTOM_PRIOR`` (`symptom_prior.py --retrained`). ``runs``: the protocol's "cascade" runs per seed,
    whose test photos the study's must be."""
    from agripatch.recipes import load_recipe

    recipe = DATASETS.get(dataset, {}).get("recipe")
    current = _recipe_default_runs(dataset, 0, runs, current_only=True)
    if current is not None:  # the recipe exactly as it is now, trained on the protocol's split
        return current
    replayed = _last_epoch_runs(dataset, 0, runs)
    if replayed is not None:
        return replayed
    study = FULL_IMAGE_EXIT / f"{dataset}.json"
    if recipe and load_recipe(recipe).cascade.full_image_exit and study.is_file():
        seeds = json.loads(study.read_text())["per_seed"]
        for seed in seeds:
            if sorted(runs.get(str(seed["seed"]), {}).get("paths", [])) != seed.get("paths"):
                raise SystemExit(f"{study}: seed {seed['seed']} tested other photos than the protocol's runs")
        if all("correct" in s for s in seeds):
            runs = [np.array(s["correct"]["full image exit"], bool) for s in seeds]
            ece = float(np.mean([s["ece"]["full_image_exit"] for s in seeds]))
            refused = float(np.mean([s["refused"]["full_image_exit"] for s in seeds]))
            return ({"correct": runs, "gmacs": [s["full_image_exit"]["mean_gmacs"] for s in seeds]},
                    "calibrated 0.97 + full-image exit", f"{ece:.3f}", f"{100 * refused:.1f}%")
    default_runs = _recipe_default_runs(dataset, 0, runs)
    if default_runs is not None:
        return default_runs
    symptom_study = SYMPTOM_PRIOR / "recipe_default.json"
    if recipe and load_recipe(recipe).cascade.cell_prior == "symptom" and symptom_study.is_file():
        study = json.loads(symptom_study.read_text())
        if study["recipe"] == recipe:
            seeds = study["per_seed"]
            for seed in seeds:
                if sorted(runs.get(str(seed["seed"]), {}).get("paths", [])) != seed["paths"]:
                    raise SystemExit(f"{symptom_study}: seed {seed['seed']} tested other photos than the protocol's runs")
            return ({"correct": [np.array(s["correct"], bool) for s in seeds], "gmacs": [s["gmacs"] for s in seeds]},
                    "calibrated 0.97, symptom prior; GMACs include the severity map",
                    _ece_text(seeds), f"{100 * np.mean([s['refused'] for s in seeds]):.1f}%")
    rule = rules.get(dataset)
    default = rule["rules"]["target 0.97"] if rule else None
    if default is None:
        return cascade, "previous round's rule", "-", "-"
    return (cascade, "calibrated 0.97", f"{default['ece']:.3f}",
            f"{100 * (default['unsure'] + default['not_a_leaf']):.1f}%")


def _recipe_default_runs(dataset: str, folds: int, runs: dict,
                         current_only: bool = False) -> tuple[dict, str, str, str] | None:
    """The recipe as it is now, trained on the protocol's splits (or folds) by ``recipe_default.py``, in
    :func:`_recipe_default`'s form; None when that study has not been run for the dataset's recipe (with
    ``current_only``, for its settings as they are now: the study's recipe digest). A cross-validation's folds are
    joined into one row of every photo, ordered by path as :func:`_models` orders them."""
    from agripatch.recipes import load_recipe
    from benchmarks.recipe_default import recipe_digest, result_path

    study = result_path(dataset, folds)
    recipe = DATASETS.get(dataset, {}).get("recipe")
    if not recipe or not study.is_file():
        return None
    stored = json.loads(study.read_text())
    if stored["recipe"] != recipe or (current_only and stored.get("recipe_digest") != recipe_digest(recipe)):
        return None
    full_image = load_recipe(recipe).cascade.full_image_exit
    return _default_row(stored["per_seed"], folds, runs, recipe, study, full_image)


def _last_epoch_runs(dataset: str, folds: int, runs: dict) -> tuple[dict, str, str, str] | None:
    """The recipe as it is now where it keeps the patch stage's last epoch: `last_epoch.py`'s replays of its runs
    (with the full-image exit where the recipe ends with it), in :func:`_recipe_default`'s form; None without them."""
    from agripatch.recipes import load_recipe

    recipe = DATASETS.get(dataset, {}).get("recipe")
    if not recipe or not LAST_EPOCH.is_file():
        return None
    spec = load_recipe(recipe)
    if spec.stages.patches.keep != "last":
        return None
    study = json.loads(LAST_EPOCH.read_text()).get(f"{dataset}_cv{folds}" if folds else dataset)
    full_image = spec.cascade.full_image_exit
    entry = (study or {}).get("full_image_exit" if full_image else "variants", {}).get("patches_last", {})
    if "per_seed" not in entry:
        return None
    return _default_row(entry["per_seed"], folds, runs, recipe, LAST_EPOCH, full_image)


def _default_row(seeds: list[dict], folds: int, runs: dict, recipe: str, study: Path,
                 full_image: bool = False) -> tuple[dict, str, str, str] | None:
    """Runs stored by `recipe_default.read_evaluation` (per seed, or per fold) as one row of the results table."""
    from agripatch.recipes import load_recipe

    for seed in seeds:
        if sorted(runs.get(str(seed["seed"]), {}).get("paths", [])) != seed["paths"]:
            raise SystemExit(f"{study}: seed {seed['seed']} tested other photos than the protocol's runs")
    grouped: dict[int, list[dict]] = {}
    for seed in seeds:  # a cross-validation's repetition r is the runs with seeds rK .. rK+K-1, as in _models
        grouped.setdefault(seed["seed"] // folds if folds else seed["seed"], []).append(seed)
    groups = [g for g in grouped.values() if not folds or len(g) == folds]
    if not groups:  # only some folds were run: no row of every photo yet
        return None
    correct, gmacs = [], []
    for group in groups:
        order = np.argsort(np.concatenate([s["paths"] for s in group]))
        correct.append(np.concatenate([np.array(s["correct"], bool) for s in group])[order])
        gmacs.append(float(np.average([s["gmacs"] for s in group], weights=[len(s["paths"]) for s in group])))
    photos = [len(s["paths"]) for s in seeds]
    cascade = load_recipe(recipe).cascade
    target = cascade.target_confidence
    rule = (f"calibrated {target:g}" if target else "the recipe's exits") + (" + full-image exit" if full_image else "")
    rule += ", symptom prior" if cascade.cell_prior == "symptom" else ""
    extra = "; GMACs include the severity map" if any(s["symptom_map_gmacs"] for s in seeds) else ""
    return ({"correct": correct, "gmacs": gmacs}, rule + extra, _ece_text(seeds),
            f"{100 * np.average([s['refused'] for s in seeds], weights=photos):.1f}%")


def _ece_text(runs: list[dict]) -> str:
    """The runs' ECE, weighted by their photos, with in brackets the ECE a perfectly calibrated model shows with
    the same confidences on as many photos, where the runs store it (`recipe_default.read_evaluation`)."""
    photos = [len(run["paths"]) for run in runs]
    text = f"{np.average([run['ece'] for run in runs], weights=photos):.3f}"
    if all("ece_if_calibrated" in run for run in runs):
        text += f" ({np.average([run['ece_if_calibrated'] for run in runs], weights=photos):.3f})"
    return text


def summary_block() -> str:
    """The README's one results table: per protocol dataset, what its recipe gives by default (:func:`_recipe_default`)
    against the most accurate full-image baseline on the same test photos and seeds (paired)."""
    from agripatch.engine.stats import paired_comparison

    rules = json.loads(EXIT_RULES.read_text())["datasets"] if EXIT_RULES.is_file() else {}
    lines = ["| dataset | test photos x seeds | recipe (exits) | default cascade: top-1 @ GMACs | best full-image "
             "baseline: top-1 @ GMACs | cascade - baseline [95% CI] | cascade MACs / baseline's | ECE (a calibrated model's) | real photos "
             "refused |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        results = json.loads(path.read_text())
        models = _models(results)
        cascade = models.get("cascade: cascade")
        baselines = {k: v for k, v in models.items() if v["config"].startswith("baseline")}
        if cascade is None or not baselines:
            continue
        folds = results.get("folds")
        cascade, exits, ece, refused = (_recipe_default(results["dataset"], cascade, rules, results["runs"]["cascade"])
                                        if not folds
                                        else _last_epoch_runs(results["dataset"], folds, results["runs"]["cascade"])
                                        or _recipe_default_runs(results["dataset"], folds, results["runs"]["cascade"])
                                        or (cascade, "previous round's rule", "-", "-"))
        best_label, best = max(baselines.items(), key=lambda kv: float(np.mean(kv[1]["correct"])))
        n = min(len(cascade["correct"]), len(best["correct"]))
        c = paired_comparison(np.stack(cascade["correct"][:n]), np.stack(best["correct"][:n]))
        name = results["dataset"] + (f" ({folds}-fold CV)" if folds else "")
        recipe = DATASETS.get(results["dataset"], {}).get("recipe", "?")
        photos = len(cascade["correct"][0])
        lines.append(f"| {name} | {photos} x {n} | `{recipe}` ({exits}) | {c.accuracy_a:.4f} @ "
                     f"{np.mean(cascade['gmacs']):.3f} | {best_label}: {c.accuracy_b:.4f} @ {np.mean(best['gmacs']):.3f} | "
                     f"{100 * c.difference:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | "
                     f"{np.mean(cascade['gmacs']) / np.mean(best['gmacs']):.0%} | {ece} | {refused} |")
    return "\n".join(lines) + "\n"


def details_block() -> str:
    """benchmarks/README.md's per-dataset tables: every model's mean test top-1 over seeds and its cost, and each
    cascade against the most accurate baseline and against the baseline of nearest cost (paired)."""
    from agripatch.engine.stats import paired_comparison

    lines = []
    for path in sorted(RESULTS.glob("*.json")):
        results = json.loads(path.read_text())
        models = _models(results)
        baselines = {k: v for k, v in models.items() if v["config"].startswith("baseline")}
        cascades = {k: v for k, v in models.items() if k.endswith(": cascade") or ": budget " in k}
        if not baselines or not cascades:
            continue
        mean = lambda m: float(np.mean(m["correct"]))  # noqa: E731
        cost = lambda m: float(np.mean(m["gmacs"]))  # noqa: E731
        seeds = min(len(m["correct"]) for m in models.values())
        recipe = DATASETS.get(results["dataset"], {}).get("recipe", "?")
        photos = len(next(iter(models.values()))["correct"][0])
        lines += [f"**{results['dataset']}**, \"cascade\" = the `{recipe}` recipe ({results['protocol']}; "
                  f"{_design(results, photos, seeds, max(len(m['correct']) for m in models.values()))})", "",
                  "| model | test top-1 | GMACs/img |", "|---|---|---|"]
        for label, m in sorted(models.items(), key=lambda kv: cost(kv[1])):
            lines.append(f"| {label} | {mean(m):.4f} | {cost(m):.3f} |")
        best = max(baselines.items(), key=lambda kv: mean(kv[1]))
        lines += ["", "| cascade vs | A - B [95% CI] | McNemar p | cascade cost / baseline cost |", "|---|---|---|---|"]
        for a_label, a in cascades.items():
            nearest = min(baselines.items(), key=lambda kv: abs(cost(kv[1]) - cost(a)))
            for tag, (b_label, b) in (("most accurate baseline", best), ("baseline nearest in cost", nearest)):
                n = min(len(a["correct"]), len(b["correct"]))
                c = paired_comparison(np.stack(a["correct"][:n]), np.stack(b["correct"][:n]))
                lines.append(f"| {a_label} vs {tag} ({b_label}) | {c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | "
                             f"{c.p_mcnemar:.3g} | {cost(a) / cost(b):.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the requested configurations and seeds, then write JSON and the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS))
    parser.add_argument("--readme", action="store_true", help="regenerate the README's results from every JSON")
    parser.add_argument("--configs", default=None, help="comma-separated configuration names (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", type=int, default=0,
                        help="K-fold cross-validation over every photo instead of the test split (seeds 0..K-1)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --folds: train each fold this many times (seeds k, k+K, ...; the same folds)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "protocol")
    parser.add_argument("--report", action="store_true", help="only regenerate the table from the JSON")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="an extra configuration: NAME=key=value;key=value (an ablation of the cascade); "
                             "{seed} and {runs} in a value become the seed and the dataset's runs folder")
    args = parser.parse_args(argv)
    if args.readme:
        write_block(REPO / "README.md", summary_block())
        write_block(REPO / "benchmarks" / "README.md", details_block())
        print("README.md and benchmarks/README.md results regenerated")
        return
    if args.dataset is None:
        parser.error("--dataset is required (or --readme)")
    spec = DATASETS[args.dataset]
    for extra in args.extra:
        name, _, overrides = extra.partition("=")
        spec["configs"][name] = [*spec["configs"]["cascade"], *filter(None, overrides.split(";"))]
    name = f"{args.dataset}_cv{args.folds}" if args.folds else args.dataset
    seeds = list(range(args.folds * args.repeats)) if args.folds else [int(s) for s in args.seeds.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"dataset": args.dataset, "runs": {}}
    if args.folds:
        results["folds"] = args.folds
        results["protocol"] = (f"stratified {args.folds}-fold cross-validation over every photo (fold k tested by "
                               f"the runs with seed k, k+{args.folds}, ...); best epochs and exit thresholds on {FOLD_VAL:.0%} "
                               f"of each training side")
    else:
        results["protocol"] = ("official test split" if spec["splits"] else "fixed stratified 20% test split (seed 0)") + \
            "; best epochs and exit thresholds on the training side's validation split; seeds " + args.seeds
    if not args.report:
        results["environment"] = environment()
        root = None if args.folds else prepare_root(args.dataset, args.work)
        configs = args.configs.split(",") if args.configs else list(spec["configs"])
        for config in configs:
            results.setdefault("overrides", {})[config] = spec["configs"][config]
            for seed in seeds:
                print(f"[{name}] {config} seed {seed}" + (f" fold {seed % args.folds}" if args.folds else ""), flush=True)
                data = prepare_fold_root(args.dataset, args.folds, seed % args.folds, args.work) if args.folds else root
                results["runs"].setdefault(config, {})[str(seed)] = run_one(args.dataset, config, seed, data,
                                                                            args.work / name / "runs")
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(results))
                tmp.replace(path)
    table = report(results)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
