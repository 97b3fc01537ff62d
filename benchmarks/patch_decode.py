"""Could the patches be cut from the glance's reduced decode instead of a second, full one? (issue 28, end to end)

    python -m benchmarks.patch_decode [--seeds 0,1,2] [--side 250]

On 500-px iBean photos `predict folder` decodes each photo reduced for its glance and, for the photos that reach a
patch, a second time at full size: the `ibean` recipe's patches need photos of at least
``pipeline.decode_min_side()`` (348) pixels, and JPEG decoding reduces only by halves (500 -> 250). That second decode
is what keeps the cascade under the @224 model end to end (`benchmarks/README.md`, "The `ibean` recipe as it ships,
on real photos at 500 px and at 12 MP"). This asks what the accuracy would pay: the `recipe_default.py` models
evaluated on the protocol's iBean test photos twice, as they are and with every photo decoded for the patches
at ``--side`` (the half decode: patches upsampled from about 93 to 128 px), paired per photo over the seeds. Only
the patches' decode moves (the glance and the full-image exit read their own decodes as before); thresholds,
temperatures and refusal are the models' own. Writes ``benchmarks/results/patch_decode/ibean.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from agripatch.io.atomic import atomic_write_text  # noqa: E402
from benchmarks.machine import cpu_description  # noqa: E402
from benchmarks.recipe_default import read_evaluation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "recipe_default" / "ibean"
OUT = REPO / "benchmarks" / "results" / "patch_decode" / "ibean.json"


def evaluate(model: Path, side: int | None, out: Path) -> dict:
    """`agripatch evaluate` of ``model`` on the protocol's iBean test photos; with ``side``, the photos decoded for
    the patches at that shorter side instead of the model's own ``decode_min_side``."""
    from agripatch.engine.evaluate import EvaluateOptions, evaluate_bundle
    from agripatch.pipeline.bundle import load_model_file

    bundle = load_model_file(model)
    own = bundle.pipeline.decode_min_side()
    if side is not None:
        bundle.pipeline.decode_min_side = lambda: side  # this instance only: what split_dataset decodes at
    evaluate_bundle(bundle, EvaluateOptions(model=model, data=WORK / "data", out=out, split="test"),
                    log=lambda *a, **k: None)
    run = read_evaluation(out, seed=0)  # per sorted test path, as recipe_default.py reads an evaluation
    return {"decode_min_side": side or own, "top1": run["top1"], "mean_gmacs": run["gmacs"], "paths": run["paths"],
            "correct": [int(c) for c in run["correct"]]}


def main(argv: list[str] | None = None) -> None:
    """Evaluate each seed both ways, print the paired difference, write JSON."""
    import tempfile

    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--side", type=int, default=250, help="the patches' decode side to try (250: the half decode)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            model = WORK / f"seed{seed}" / "model.pt"
            runs[seed] = {"as_shipped": evaluate(model, None, Path(tmp) / f"{seed}_own"),
                          "reduced": evaluate(model, args.side, Path(tmp) / f"{seed}_reduced")}
            print(f"seed {seed}: as shipped {runs[seed]['as_shipped']['top1']:.4f} "
                  f"(decode {runs[seed]['as_shipped']['decode_min_side']}), patches from {args.side}: "
                  f"{runs[seed]['reduced']['top1']:.4f}", flush=True)
    paths = runs[seeds[0]]["as_shipped"]["paths"]
    if any(run["paths"] != paths for pair in runs.values() for run in pair.values()):
        raise SystemExit("the evaluations do not list the same test photos")
    own = np.array([runs[s]["as_shipped"]["correct"] for s in seeds])
    reduced = np.array([runs[s]["reduced"]["correct"] for s in seeds])
    paired = paired_comparison(reduced, own)
    report = {"dataset": "ibean (protocol test split)", "side": args.side, "seeds": seeds, "photos": len(paths),
              "cpu": cpu_description(), "runs": {str(s): {k: {kk: vv for kk, vv in v.items() if kk not in ("paths", "correct")}
                                                        for k, v in r.items()} for s, r in runs.items()},
              "paired_reduced_minus_shipped": asdict(paired)}
    print(f"patches from the {args.side}-px decode against as shipped: {100 * paired.difference:+.2f} points "
          f"[{100 * paired.ci_low:+.2f}, {100 * paired.ci_high:+.2f}] ({paired.only_a} photos gained, "
          f"{paired.only_b} lost), {len(paths)} photos x {len(seeds)} seeds")
    written = atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
