"""Does running the networks in bf16 pay on this CPU, and does it change the answers? (issue 28; the rule of
``device.inference_dtype``: ``predict`` and ``evaluate`` run in bf16 by default on CPUs with AMX units.)

    python -m benchmarks.bf16_inference                                   # each shipped network: fp32 / bf16 / autocast
    python -m benchmarks.bf16_inference --model RUN/model.pt --data ROOT --name ibean_seed0   # and the answers, paired

Part 1 times the networks the recipes run, at the shapes and batches ``predict`` runs them (``fuse_speed.SHAPES``),
as ``inference_model`` lays them out, in three forms: float32 (what every CPU ran before), bf16 weights and inputs
(what ``ModelBundle.place`` makes on an AMX CPU) and float32 weights under ``torch.autocast`` bf16 (what training
uses), in interleaved rounds in one process; best time of each, with the CPU model and flags. Weights are
ImageNet's (or random heads), which does not change a network's time.

Part 2 (``--model``, ``--data``) runs ``agripatch evaluate`` on the split twice, ``--precision float32`` and
``--precision bfloat16``, and pairs the two on the same photos: photos whose answer or exit changed, top-1 of each
with the paired 95% interval, mean GMACs, largest confidence change, the full-image baseline's top-1 in each
precision, and for a model that measures severity each photo's share and class in both. The thresholds are the model file's (fitted in float32 at training time), as a user's AMX machine uses
them. Writes ``benchmarks/results/bf16_inference/<name>.json`` (``<name>``: ``--name``, default the CPU kind).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.fuse_speed import SHAPES, best_of_rounds, build, default_name  # noqa: E402
from benchmarks.machine import cpu_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "bf16_inference"


def forms(model: torch.nn.Module, probe: torch.Tensor) -> dict[str, tuple[torch.nn.Module, torch.dtype, bool]]:
    """The network laid out for inference in each form: (module, input dtype, under bf16 autocast)."""
    from agripatch.models.fuse import inference_model

    laid_out = inference_model(model, probe)
    return {"float32": (laid_out, torch.float32, False),
            "bf16": (copy.deepcopy(laid_out).to(torch.bfloat16), torch.bfloat16, False),
            "autocast": (laid_out, torch.float32, True)}


def _call(form: tuple[torch.nn.Module, torch.dtype, bool], x: torch.Tensor) -> None:
    module, dtype, autocast = form
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        module(x.to(dtype))


def best_seconds(models: dict, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Best seconds per call of each form on ``x``, the forms taking turns round by round."""
    return best_of_rounds({name: (lambda form=form: _call(form, x)) for name, form in models.items()}, rounds)


def network_times(rounds: int) -> list[dict]:
    """Part 1: ms per image of every shipped network in each form, printed as it goes."""
    rows = []
    for label, name, kind, (h, w), batch in SHAPES:
        x = torch.rand(batch, 3, h, w).contiguous(memory_format=torch.channels_last)
        seconds = best_seconds(forms(build(name, kind), x[:2]), x, rounds)
        ms = {form: 1000 * s / batch for form, s in seconds.items()}
        rows.append({"network": label, "input": [h, w], "batch": batch, "ms_per_image": ms,
                     "float32_over_bf16": ms["float32"] / ms["bf16"],
                     "float32_over_autocast": ms["float32"] / ms["autocast"]})
        print(f"{label:58s} batch {batch:3d}: float32 {ms['float32']:7.3f}, bf16 {ms['bf16']:7.3f} "
              f"({rows[-1]['float32_over_bf16']:.2f}x), autocast {ms['autocast']:7.3f} ms/image", flush=True)
    return rows


def _predictions(folder: Path) -> dict[str, dict]:
    with (folder / "predictions.csv").open(newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def severities(model: Path, data: Path, split: str) -> dict | None:
    """Every photo's severity (percent of the leaf with symptoms, and class) in float32 and in bf16, paired; None when
    the model does not measure severity."""
    import torch

    from agripatch.engine.scoring import score_photos, split_dataset
    from agripatch.pipeline.bundle import load_model_file

    shares, classes = {}, {}
    for precision in ("float32", "bfloat16"):
        bundle = load_model_file(model)
        if bundle.pipeline.config.severity is None:
            return None
        bundle.place(torch.device("cpu"), precision)
        scored = score_photos(bundle.pipeline, split_dataset(bundle, data, split))
        shares[precision] = np.array([s.share for s in scored.outputs.severities])
        classes[precision] = np.array([s.index for s in scored.outputs.severities])
    change = np.abs(shares["bfloat16"] - shares["float32"])
    return {"photos": int(change.size), "mean_share": {p: float(v.mean()) for p, v in shares.items()},
            "largest_share_change_points": float(change.max()), "mean_share_change_points": float(change.mean()),
            "classes_changed": int((classes["bfloat16"] != classes["float32"]).sum())}


def answers(model: Path, data: Path, split: str) -> dict:
    """Part 2: ``evaluate`` in float32 and in bf16 on the same photos, paired."""
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.engine.stats import paired_comparison

    summaries, rows = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for precision in ("float32", "bfloat16"):
            out = Path(work) / precision
            summaries[precision] = run_evaluation(EvaluateOptions(model=model, data=data, out=out, split=split,
                                                                  precision=precision))
            rows[precision] = _predictions(out)
    paths = sorted(rows["float32"])
    a, b = ([rows[p][path] for path in paths] for p in ("float32", "bfloat16"))
    right = [np.array([r["predicted"] == r["true"] for r in side]) for side in (b, a)]
    c = paired_comparison(right[0], right[1])
    summary = {p: {"top1": s["top1"], "mean_gmacs": s["mean_gmacs"], "exit_histogram": s["exit_histogram"],
                   "ece": s["calibration"]["ece"], "precision": s["precision"],
                   "baseline_top1": s.get("baseline", {}).get("top1"),
                   "refused": (s.get("refusal") or {}).get("refused_fraction")} for p, s in summaries.items()}
    return {"model": str(model), "data": str(data), "split": split, "photos": len(paths), **summary,
            "answers_changed": sum(x["predicted"] != y["predicted"] for x, y in zip(a, b)),
            "exits_changed": sum(x["stage"] != y["stage"] for x, y in zip(a, b)),
            "largest_confidence_change": max(abs(float(x["confidence"]) - float(y["confidence"])) for x, y in zip(a, b)),
            "bf16_minus_float32_points": 100 * c.difference, "ci95_points": [100 * c.ci_low, 100 * c.ci_high],
            "gained": c.only_a, "lost": c.only_b, "severity": severities(model, data, split)}


def main() -> None:
    """Measure, print, write the JSON."""
    from agripatch.io.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", type=Path, default=None, help="a model file: also pair its answers")
    parser.add_argument("--data", type=Path, default=None, help="the dataset root the model's split comes from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--skip-networks", action="store_true", help="only part 2")
    parser.add_argument("--name", default=None, help="result file name (default: CPU vendor and vector extension)")
    args = parser.parse_args()
    if (args.model is None) != (args.data is None):
        parser.error("--model and --data go together")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = cpu_description()
    payload = {"cpu": cpu, "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
               "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
               "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    if not args.skip_networks:
        payload["networks"] = network_times(args.rounds)
    if args.model is not None:
        payload["answers"] = answers(args.model, args.data, args.split)
        print(json.dumps(payload["answers"], indent=1))
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags']) or 'no AVX2'}), {args.threads} threads, "
          f"best of {args.rounds} interleaved rounds, torch {torch.__version__}")
    out = OUT / f"{args.name or default_name(cpu)}.json"
    atomic_write_text(out, json.dumps(payload, indent=1))
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
