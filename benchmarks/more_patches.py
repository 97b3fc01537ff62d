"""Would reading more patches help? A trained cascade's top-1 when it reads every one of K = 1..K_MAX patches.

    python -m benchmarks.more_patches --dataset coffee_highres --config cascade [--k-max 8]

For each protocol seed of the configuration (runs under ``benchmarks/work/protocol``, from ``protocol.py``),
the model file is loaded, its cascade set to read ``--k-max`` patches (the same AnchorNet cells, greedy
suppression and crops as ``predict``; no retraining: the first K of K_MAX cells are exactly the K cells a
K-patch cascade reads), and every stage's probabilities are computed on the validation and test photos.
Prints top-1 of "glance + first K patches" per K and split (mean over seeds) and the MACs each K costs;
writes ``benchmarks/results/more_patches/<dataset>-<config>.json``. Validation is where a K would be chosen;
test photos chose nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def stage_accuracy(model: Path, data: Path, split: str, k_max: int) -> tuple[list[float], list[int]]:
    """Top-1 after the glance and after each of the first 1..k_max patches, and the cumulative MACs."""
    from agripatch.engine.scoring import score_photos, split_dataset
    from agripatch.pipeline.bundle import load_model_file

    bundle = load_model_file(model)
    pipeline = bundle.pipeline.eval()
    pipeline.config = pipeline.config.model_copy(update={"k": k_max})
    scored = score_photos(pipeline, split_dataset(bundle, data, split))
    top1 = (scored.outputs.probs.argmax(axis=2) == scored.labels[:, None]).mean(axis=0)
    return [float(a) for a in top1], [int(m) for m in scored.outputs.exit_macs]


def main(argv: list[str] | None = None) -> None:
    """Score every seed of one protocol configuration at K = 0..k_max and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="cascade")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k-max", type=int, default=8)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "protocol")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = args.work / args.dataset / "data"
    result = {"dataset": args.dataset, "config": args.config, "k_max": args.k_max, "seeds": {}}
    for seed in args.seeds.split(","):
        model = args.work / args.dataset / "runs" / args.config / f"seed{seed}" / "model.pt"
        result["seeds"][seed] = {}
        for split in ("val", "test"):
            top1, macs = stage_accuracy(model, data, split, args.k_max)
            result["seeds"][seed][split] = top1
            result["stage_gmacs"] = [m / 1e9 for m in macs]
            print(f"seed {seed} {split}: " + " ".join(f"K={k}:{a:.3f}" for k, a in enumerate(top1)), flush=True)
    print(f"\n| split | {' | '.join(f'K={k}' for k in range(args.k_max + 1))} |")
    print("|---|" + "---|" * (args.k_max + 1))
    for split in ("val", "test"):
        mean = np.mean([result["seeds"][s][split] for s in result["seeds"]], axis=0)
        result[f"{split}_mean"] = mean.tolist()
        print(f"| {split} | {' | '.join(f'{a:.3f}' for a in mean)} |")
    print(f"| GMACs | {' | '.join(f'{g:.3f}' for g in result['stage_gmacs'])} |")
    out = REPO / "benchmarks" / "results" / "more_patches" / f"{args.dataset}-{args.config}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps(result, indent=2))
    out.with_suffix(".tmp").replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
