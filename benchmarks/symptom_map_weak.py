"""Do BRACOL's severity classes teach the symptom map? Maps trained with ``--severity-weight`` (the masks plus the
1,192 `leaf/` train leaves' classes as weak labels: a share must fall in its class's range) against maps trained
at the same side on the masks alone, seed for seed, paired over the 285 `leaf/` test leaves; from stored results.

    python -m benchmarks.symptom_map --side 224 --seeds 0,1,2 --severity-weight 1   # first: the weakly taught maps
    python -m benchmarks.symptom_map_weak --side 224 --weight 1                     # then: this comparison
    python -m benchmarks.symptom_map_weak --side 224 --folder coffee_field/side224  # any other maps, e.g. trained
                                                                                    # with synthetic field scenes

Severity classes from each map's own cut-points on its train-leaf shares (what the package ships with a map), and
from the cut-points fitted on the masks' shares (how well the share itself reads BRACOL's definitions). The
high-res test leaves' share concordance and error come from each folder's ``summary.json``. Writes
``results/symptom_map/side<S>/weak<W>/versus_masks_only.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from benchmarks.symptom_map_sides import LEAF, RESULTS, folder_correct


def main(argv: list[str] | None = None) -> None:
    """Pair the weakly taught maps with the masks-only maps of the same side and seeds."""
    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--folder", default=None, help="the maps to compare, a folder under results/symptom_map "
                                                       "(default: side<S>/weak<W>)")
    args = parser.parse_args(argv)
    plain_folder = RESULTS / "symptom_map" / f"side{args.side}"
    weak_folder = RESULTS / "symptom_map" / args.folder if args.folder else plain_folder / f"weak{args.weight:g}"
    with open(LEAF / "severity.csv", newline="") as handle:
        leaf_ids = [Path(r["path"]).stem for r in csv.DictReader(handle) if r["split"].strip() == "test"]
    weak, weak_seeds = folder_correct(weak_folder, leaf_ids)
    plain, plain_seeds = folder_correct(plain_folder, leaf_ids)
    keep = [plain_seeds.index(s) for s in weak_seeds]  # the same seeds, in the same order
    c = paired_comparison(weak.astype(float), plain[keep].astype(float))
    summaries = {name: json.loads((folder / "summary.json").read_text())
                 for name, folder in (("weak", weak_folder), ("masks only", plain_folder))}
    result = {"side": args.side, "weight": None if args.folder else args.weight, "folder": args.folder,
              "seeds": weak_seeds, "leaves": len(leaf_ids),
              "class_pred_cuts": {"weak": weak.mean(axis=1).tolist(), "masks only": plain[keep].mean(axis=1).tolist(),
                                  "difference_points": 100 * c.difference,
                                  "ci95_points": [100 * c.ci_low, 100 * c.ci_high], "gained": c.only_a, "lost": c.only_b}}
    for name, summary in summaries.items():  # per seed, the weakly taught maps' seeds only
        at = [summary["seeds"].index(seed) for seed in weak_seeds]
        result[name] = {key: [summary[group][field][i] for i in at] for key, group, field in (
            ("class_mask_cuts", "leaf_test_mask_bins", "accuracy_per_seed"),
            ("highres_ccc", "highres_test", "ccc_per_seed"), ("highres_mae", "highres_test", "mae_per_seed"))}
    out = weak_folder / "versus_masks_only.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("| map | seeds | leaf/ test class, own cuts (per seed) | class, cuts on mask shares | high-res CCC | MAE |")
    print("|---|---|---|---|---|---|")
    label = args.folder or f"masks + severity classes (W {args.weight:g})"
    for name, correct in ((label, weak), ("masks only", plain[keep])):
        s = result["weak" if name == label else "masks only"]
        print(f"| {name} | {len(correct)} | {correct.mean():.4f} ("
              f"{' / '.join(f'{v:.4f}' for v in correct.mean(axis=1))}) | {np.mean(s['class_mask_cuts']):.4f} | "
              f"{np.mean(s['highres_ccc']):.3f} | {np.mean(s['highres_mae']):.3f} |")
    print(f"own cuts, paired: {100 * c.difference:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] points "
          f"({c.only_a} gained, {c.only_b} lost); wrote {out}")


if __name__ == "__main__":
    main()
