"""Which exit and refusal rules hold on photos that chose nothing: replayed offline on protocol runs.

    python -m benchmarks.exit_rules --config cascade24                 # every protocol dataset with such runs
    python -m benchmarks.exit_rules --config cascade24 --targets 0.9,0.95,0.97

Every protocol run keeps its validation photos' stage probabilities and glance features (``val_outputs.npz``,
written by `train`) and its test photos' (``eval_test/stage_probs.npz``, written by `evaluate`). Each rule is
fitted on the validation photos alone, as training fits it, then replayed on the test photos
(:func:`agripatch.pipeline.exits.simulate_exits`, bit for bit what `predict` decides); the networks never
run again. Per dataset and rule: test top-1 over seeds, GMACs, the paired difference against all patches and
against the dataset's most accurate full-image baseline (its protocol runs), real test photos refused
(``unsure`` / ``not_a_leaf``) and the expected calibration error of the answers. The global target confidence
is chosen on the validation photos of every dataset and seed pooled (the test photos choose nothing) and
written with the table to benchmarks/results/exit_rules/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from statistics import NormalDist

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.engine.stats import paired_comparison  # noqa: E402
from agripatch.io.torchfile import load_object  # noqa: E402
from agripatch.pipeline.config import DEFAULT_TARGET_CONFIDENCE  # noqa: E402
from agripatch.pipeline.calibration import (  # noqa: E402
    apply_temperature,
    expected_calibration_error,
    fit_temperatures,
    temper_stages,
)
from agripatch.pipeline.exits import (  # noqa: E402
    ExitPolicy,
    ExitOutputs,
    choose_thresholds,
    answer_probabilities,
    simulate_exits,
)
from agripatch.pipeline.refusal import DISTANCE_QUANTILE, Refusal, unsure_threshold, with_thresholds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "benchmarks" / "results" / "protocol"
OUT = REPO / "benchmarks" / "results" / "exit_rules"
WORK = REPO / "benchmarks" / "work" / "protocol"
DATASETS = ("ibean", "coffee_leaf", "plantvillage_mini")
#: 30% of each dataset's most accurate full-image baseline's GMACs (as in protocol.py): `--budget` at that cost
BUDGETS = {"ibean": 0.09, "coffee_leaf": 0.117, "plantvillage_mini": 0.09}


def _untemper(probs: np.ndarray, temperatures: list[float] | None) -> np.ndarray:
    """The untempered stage probabilities of a model file whose cascade tempered them."""
    if temperatures is None:
        return probs
    return np.stack([apply_temperature(probs[:, s], 1.0 / t) for s, t in enumerate(temperatures)], axis=1)


def load_run(run: Path) -> dict:
    """A finished protocol run's validation and test outputs (untempered), its refusal rule and test paths."""
    model = load_object(run / "model.pt")
    temperatures = model["cascade"].get("temperatures")
    val = dict(np.load(run / "val_outputs.npz"))
    test = dict(np.load(run / "eval_test" / "stage_probs.npz"))
    test["probs"] = _untemper(test["probs"], temperatures).astype(np.float32)
    with open(run / "eval_test" / "predictions.csv", newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    return {"val": val, "test": test, "refusal": Refusal.from_stored(model["refusal"]), "paths": paths}


def apply_rule(run: dict, rule: str, value: float | None, quantile: float, z: float | None) -> dict:
    """Fit ``rule`` on the run's validation photos and replay it on its test photos."""
    val, test = run["val"], run["test"]
    if rule == "tolerance":  # the rule until now: raw confidences, thresholds on val, unsure at the exits
        temps, floor = None, None
        policy = ExitPolicy()
    else:
        temps = fit_temperatures(val["probs"], val["labels"])
        policy = ExitPolicy(target_confidence=value) if rule == "target" else ExitPolicy(budget_gmacs=value)
    vp = temper_stages(val["probs"], temps).astype(np.float32)
    tp = temper_stages(test["probs"], temps).astype(np.float32)
    n_exits = vp.shape[1]
    if rule == "tolerance":
        choice = choose_thresholds(policy, n_exits, ExitOutputs(vp, val["stage_macs"]), val["labels"])
        pred_v, stage_v, _ = simulate_exits(vp, val["stage_macs"], choice.thresholds)
        conf_v = answer_probabilities(vp, stage_v).max(1)
        floor = unsure_threshold(conf_v, pred_v == val["labels"], 0.01)
        thresholds = choice.thresholds
    else:
        floor = unsure_threshold(vp[:, -1].max(1), vp[:, -1].argmax(1) == val["labels"], 0.01)
        labels = None if rule == "budget" else val["labels"]
        thresholds = choose_thresholds(policy, n_exits, ExitOutputs(vp, val["stage_macs"]), labels,
                                       floor=floor).thresholds
    pred, stage, macs = simulate_exits(tp, test["stage_macs"], thresholds)
    conf = answer_probabilities(tp, stage).max(1)
    correct = pred == test["labels"]
    quantile = quantile if z is None else NormalDist().cdf(z)
    refusal = with_thresholds(run["refusal"], val["features"], vp[:, -1].max(1), val_plant_shares=val.get("plant_share"),
                              distance_quantile=quantile)
    far = refusal.not_a_leaf(refusal.distances(test["features"]), test.get("plant_share"))
    unsure = (~far) & (conf < floor)
    return {"correct": correct.astype(int), "gmacs": float(macs.mean()) / 1e9, "conf": conf, "last": stage == tp.shape[1] - 1, "thresholds": [float(t) for t in thresholds],
            "not_a_leaf": float(far.mean()), "unsure": float(unsure.mean()),
            "ece": expected_calibration_error(conf, correct),
            "all_patches": (tp[:, -1].argmax(1) == test["labels"]).astype(int),
            "glance": (tp[:, 0].argmax(1) == test["labels"]).astype(int)}


def val_replay(run: dict, value: float) -> tuple[float, float, float]:
    """(cascade top-1, all-patches top-1, GMACs) of a target confidence on the run's own validation photos."""
    val = run["val"]
    temps = fit_temperatures(val["probs"], val["labels"])
    vp = temper_stages(val["probs"], temps).astype(np.float32)
    floor = unsure_threshold(vp[:, -1].max(1), vp[:, -1].argmax(1) == val["labels"], 0.01)
    choice = choose_thresholds(ExitPolicy(target_confidence=value), vp.shape[1], ExitOutputs(vp, val["stage_macs"]),
                               val["labels"], floor=floor)
    return choice.accuracy, float((vp[:, -1].argmax(1) == val["labels"]).mean()), choice.mean_macs / 1e9


def best_baseline(dataset: str, paths: list[str]) -> tuple[str, np.ndarray, float] | None:
    """The dataset's most accurate full-image baseline in its protocol JSON: label, correct [seeds, photos]
    aligned to ``paths``, GMACs."""
    path = PROTOCOL / f"{dataset}.json"
    if not path.is_file():
        return None
    runs = json.loads(path.read_text())["runs"]
    best = None
    for config, seeds in runs.items():
        if not config.startswith("baseline-"):
            continue
        rows, gmacs = [], []
        for run in seeds.values():
            (label, model), = run["models"].items()
            order = {p: i for i, p in enumerate(run["paths"])}
            rows.append(np.asarray(model["correct"])[[order[p] for p in paths]])
            gmacs.append(model["gmacs"])
        correct = np.stack(rows)
        if best is None or correct.mean() > best[1].mean():
            best = (label, correct, float(np.mean(gmacs)))
    return best


def main(argv: list[str] | None = None) -> None:
    """Replay every rule on every dataset's runs; print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cascade")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--targets", default="0.8,0.85,0.9,0.93,0.95,0.97,0.98,0.99")
    parser.add_argument("--z", default="2.326,3,3.5,4", help="not_a_leaf cut-offs in robust sigmas of log distance")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    runs = {}
    for dataset in DATASETS:
        folder = args.work / dataset / "runs" / args.config
        done = sorted(p for p in folder.glob("seed*") if (p / "eval_test" / "summary.json").is_file()
                      and (p / "val_outputs.npz").is_file())
        if done:
            runs[dataset] = [load_run(p) for p in done]
    report = {"config": args.config, "datasets": {}, "validation": {}}
    # 1. the global target confidence, on validation photos only
    lines = ["## Validation photos (pooled over datasets and seeds): target confidence", "",
             "| target | cascade - all patches (val, pooled) | GMACs (mean of datasets) |", "|---|---|---|"]
    for t in targets:
        diffs, costs, n = [], [], 0
        for dataset, items in runs.items():
            per = [val_replay(run, t) for run in items]
            diffs += [(a - b) * len(run["val"]["labels"]) for (a, b, _), run in zip(per, items)]
            n += sum(len(run["val"]["labels"]) for run in items)
            costs.append(np.mean([c for _, _, c in per]))
        report["validation"][str(t)] = {"diff": float(sum(diffs) / max(n, 1)), "gmacs": float(np.mean(costs))}
        lines.append(f"| {t:g} | {sum(diffs) / max(n, 1):+.4f} | {np.mean(costs):.3f} |")
    # 2. every rule on the test photos
    rules = [("tolerance", None, 0.99, None)] + [("target", t, DISTANCE_QUANTILE, None) for t in targets]
    for dataset, items in runs.items():
        base = best_baseline(dataset, items[0]["paths"])
        lines += ["", f"## {dataset}: test photos ({len(items[0]['paths'])} x {len(items)} seeds)", "",
                  "| rule | top-1 | GMACs | vs all patches [95% CI] | vs " + (base[0] if base else "baseline") +
                  " [95% CI] | unsure | not_a_leaf | ECE |", "|---|---|---|---|---|---|---|---|"]
        entry = report["datasets"].setdefault(dataset, {"baseline": base[0] if base else None,
                                                        "baseline_gmacs": base[2] if base else None, "rules": {}})
        for rule, value, quantile, z in rules + [("budget", BUDGETS[dataset], DISTANCE_QUANTILE, None)]:
            out = [apply_rule(run, rule, value, quantile, z) for run in items]
            correct = np.stack([o["correct"] for o in out])
            vs_all = paired_comparison(correct, np.stack([o["all_patches"] for o in out]))
            name = rule if value is None else f"{rule} {value:g}"
            row = {"top1": float(correct.mean()), "gmacs": float(np.mean([o["gmacs"] for o in out])),
                   "vs_all": [vs_all.difference, vs_all.ci_low, vs_all.ci_high],
                   "unsure": float(np.mean([o["unsure"] for o in out])),
                   "not_a_leaf": float(np.mean([o["not_a_leaf"] for o in out])),
                   "ece": float(np.mean([o["ece"] for o in out])),
                   "thresholds": [o["thresholds"] for o in out]}
            versus = ""
            if base is not None:
                seeds = min(len(base[1]), len(correct))
                c = paired_comparison(correct[:seeds], base[1][:seeds])
                row["vs_baseline"] = [c.difference, c.ci_low, c.ci_high]
                versus = f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
            entry["rules"][name] = row
            lines.append(f"| {name} | {row['top1']:.4f} | {row['gmacs']:.3f} | {vs_all.difference:+.4f} "
                         f"[{vs_all.ci_low:+.4f}, {vs_all.ci_high:+.4f}] | {versus} | {row['unsure']:.3f} | "
                         f"{row['not_a_leaf']:.3f} | {row['ece']:.3f} |")
        all_patches = np.stack([o["all_patches"] for o in out])
        lines.append(f"| all patches | {all_patches.mean():.4f} | | | | | | |")
        if base is not None:  # item 4: would a last exit reading the whole photo pay? (simulated with the baseline runs)
            lines += ["", f"Full-image last exit, not built (simulated with the {base[0]} runs, seed for seed): photos "
                      "whose last exit is below the cut-off take the full-image answer and pay its MACs; three "
                      "cut-offs shown, none chosen (no validation photos of these baselines are kept)", "",
                      "| rule | cut-off | photos sent | top-1 | GMACs | vs " + base[0] + " [95% CI] |", "|---|---|---|---|---|---|"]
            for value in (DEFAULT_TARGET_CONFIDENCE,):
                out = [apply_rule(run, "target", value, DISTANCE_QUANTILE, None) for run in items]
                for cut in (0.5, 0.7, 0.9):
                    seeds = min(len(base[1]), len(out))
                    sent = [o["last"] & (o["conf"] < cut) for o in out[:seeds]]
                    correct = np.stack([np.where(s, b, o["correct"]) for s, b, o in zip(sent, base[1], out)])
                    gmacs = np.mean([o["gmacs"] + s.mean() * base[2] for s, o in zip(sent, out)])
                    c = paired_comparison(correct, base[1][:seeds])
                    entry.setdefault("full_image_exit", {})[f"{value:g}@{cut:g}"] = {
                        "sent": float(np.mean(sent)), "top1": float(correct.mean()), "gmacs": float(gmacs),
                        "vs_baseline": [c.difference, c.ci_low, c.ci_high]}
                    lines.append(f"| target {value:g} | {cut:g} | {np.mean(sent):.3f} | {correct.mean():.4f} | {gmacs:.3f} | "
                                 f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] |")
        refusal_lines = ["", "| not_a_leaf cut-off (robust sigmas) | test photos refused |", "|---|---|"]
        for z in (float(v) for v in args.z.split(",")):
            share = np.mean([apply_rule(run, "target", targets[0], DISTANCE_QUANTILE, z)["not_a_leaf"] for run in items])
            entry.setdefault("not_a_leaf_by_z", {})[str(z)] = float(share)
            refusal_lines.append(f"| {z:g} | {share:.4f} |")
        lines += refusal_lines
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.config}.md").write_text(text)
    (OUT / f"{args.config}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
