"""Does the exported model say what the PyTorch model says, and how fast is each backend?

    python -m benchmarks.export_check RUN/model.pt --data ROOT [--split test] [--calibration-count 300]
        [--threads 1] [--batch-size 16] [--limit N] [--export-dir DIR] [--out JSON]

Exports the model file to ONNX fp32 + int8 (`agripatch export`, int8 calibrated on --calibration-count photos
of ROOT's train split), then runs every photo of --split through three backends: PyTorch (the model file),
ONNX Runtime fp32 and ONNX Runtime int8 (the export folder), and PyTorch in bf16 with ``--bf16`` (the default where the
CPU has AMX units, as `predict` runs there; the PyTorch reference stays float32). Reports:

* fp32 fidelity: the fraction of photos with the same top-1 / exit stage / boxes as PyTorch, the largest
  |probability difference|;
* int8: top-1 agreement with fp32, and each backend's accuracy against the split's labels (when they are
  the model's classes);
* speed of the model part (the cascade on decoded photos and their glances: no decoding, no writing), side by
  side in one process on the same batches with the same threads (each batch runs on the three backends in
  turn, rotating which goes first), after one warm-up batch;
* file sizes.

Prints a markdown table and writes JSON (default ``benchmarks/results/export/<run>-<split>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def split_photos(root: Path, split: str, classes: list[str], limit: int | None) -> tuple[list[str], list[int | None]]:
    """Relative paths of the split's photos and their label indices (None for names the model does not know)."""
    from agripatch.data.splits import load_splits

    rows = [row for row in load_splits(root) if row.split == split]
    if not rows:
        raise SystemExit(f"{root} has no photos in split {split!r}")
    rows = rows[:limit] if limit else rows
    index = {name: i for i, name in enumerate(classes)}
    return [row.path for row in rows], [index.get(row.label) for row in rows]


def export(model: Path, root: Path, out: Path, count: int) -> tuple[Path, float]:
    """fp32 + int8 export into ``out``; returns the folder and the seconds it took."""
    from agripatch.export.build import ExportOptions, export_model

    start = time.perf_counter()
    export_model(ExportOptions(model=model, format="onnx", out=out, int8=True, calibration=root,
                               calibration_count=count), log=lambda message: print(f"  {message}", flush=True))
    return out, time.perf_counter() - start


def run_all(predictors: dict, root: Path, paths: list[str], batch_size: int) -> tuple[dict, dict, list[int]]:
    """Every photo through every backend, batch by batch; returns the results, the model seconds per backend and
    the indices (into ``paths``) of the photos that were readable, in the order of the results."""
    results = {name: [] for name in predictors}
    seconds = {name: 0.0 for name in predictors}
    torch_p, onnx_p = predictors["torch"], predictors["onnx_fp32"]
    kept: list[int] = []
    warm = [torch_p.item(root / paths[0])] if paths else []
    for name, p in predictors.items():  # warm-up: first-call allocations and graph initialisation
        p.run(warm if name.startswith("torch") else [onnx_p.item(root / paths[0])])
    for b, start in enumerate(range(0, len(paths), batch_size)):
        chunk = paths[start:start + batch_size]
        torch_items = [torch_p.item(root / rel, start + i) for i, rel in enumerate(chunk)]
        onnx_items = [onnx_p.item(root / rel, start + i) for i, rel in enumerate(chunk)]
        keep = [i for i, (a, o) in enumerate(zip(torch_items, onnx_items))
                if a["image"] is not None and o["image"] is not None]
        kept.extend(start + i for i in keep)
        torch_items, onnx_items = [torch_items[i] for i in keep], [onnx_items[i] for i in keep]
        if not keep:
            continue
        turn = b % len(predictors)
        order = list(predictors)[turn:] + list(predictors)[:turn]  # rotate who goes first
        for name in order:
            items = torch_items if name.startswith("torch") else onnx_items
            t0 = time.perf_counter()
            out = predictors[name].run(items)
            seconds[name] += time.perf_counter() - t0
            results[name].extend((start + i, r) for i, r in zip(keep, out))
    return {name: [r for _, r in rows] for name, rows in results.items()}, seconds, kept


def compare(results: dict, labels: list[int | None]) -> dict:
    """Fidelity of ONNX fp32 to PyTorch, int8 agreement with fp32, accuracies."""
    t, f, q = results["torch"], results["onnx_fp32"], results["onnx_int8"]
    n = len(t)
    same = lambda a, b, key: float(np.mean([key(x) == key(y) for x, y in zip(a, b)])) if n else 0.0  # noqa: E731
    known = [i for i, label in enumerate(labels) if label is not None]
    accuracy = {name: (float(np.mean([results[name][i].label == labels[i] for i in known])) if known else None)
                for name in results}
    return {
        "photos": n,
        "fp32_same_top1_as_torch": same(t, f, lambda r: r.label),
        "fp32_same_exit_stage_as_torch": same(t, f, lambda r: r.stage),
        "fp32_same_boxes_as_torch": float(np.mean([np.array_equal(a.boxes, b.boxes) for a, b in zip(t, f)])) if n else 0.0,
        "fp32_max_abs_prob_diff": max((float(np.abs(a.probs - b.probs).max()) for a, b in zip(t, f)), default=0.0),
        "int8_same_top1_as_fp32": same(f, q, lambda r: r.label),
        "int8_same_exit_stage_as_fp32": same(f, q, lambda r: r.stage),
        "int8_max_abs_prob_diff_vs_fp32": max((float(np.abs(a.probs - b.probs).max()) for a, b in zip(f, q)), default=0.0),
        **({"bf16_same_top1_as_torch": same(t, results["torch_bf16"], lambda r: r.label),
            "bf16_same_exit_stage_as_torch": same(t, results["torch_bf16"], lambda r: r.stage)}
           if "torch_bf16" in results else {}),
        "accuracy": accuracy,
        "labelled_photos": len(known),
        "mean_gmacs": {name: float(np.mean([r.macs for r in rs])) / 1e9 if rs else 0.0 for name, rs in results.items()},
    }


def table(report: dict) -> str:
    """The markdown summary."""
    c, speed, sizes = report["comparison"], report["speed"], report["sizes_mb"]
    acc = c["accuracy"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["| backend | top-1 vs torch | top-1 vs fp32 | accuracy | photos/s (model part) | graphs MB |",
             "|---|---|---|---|---|---|",
             f"| torch | 1.0000 | {fmt(c['fp32_same_top1_as_torch'])} | {fmt(acc['torch'])} | "
             f"{speed['torch']['photos_per_s']:.1f} | {sizes['model.pt']:.2f} (model.pt) |",
             f"| onnx fp32 | {fmt(c['fp32_same_top1_as_torch'])} | 1.0000 | {fmt(acc['onnx_fp32'])} | "
             f"{speed['onnx_fp32']['photos_per_s']:.1f} | {sizes['fp32']:.2f} |",
             f"| onnx int8 | n/a | {fmt(c['int8_same_top1_as_fp32'])} | {fmt(acc['onnx_int8'])} | "
             f"{speed['onnx_int8']['photos_per_s']:.1f} | {sizes['int8']:.2f} |"]
    if "torch_bf16" in speed:
        lines.append(f"| torch bf16 | {fmt(c['bf16_same_top1_as_torch'])} | n/a | {fmt(acc['torch_bf16'])} | "
                     f"{speed['torch_bf16']['photos_per_s']:.1f} | (model.pt) |")
    lines += ["",
             f"{c['photos']} photos of split {report['split']!r} ({c['labelled_photos']} with a known label), "
             f"{report['threads']} thread(s), batch {report['batch_size']}; fp32 vs torch: same exit stage "
             f"{c['fp32_same_exit_stage_as_torch']:.4f}, same boxes {c['fp32_same_boxes_as_torch']:.4f}, max |prob diff| "
             f"{c['fp32_max_abs_prob_diff']:.2e}; int8 vs fp32: same exit stage {c['int8_same_exit_stage_as_fp32']:.4f}, "
             f"max |prob diff| {c['int8_max_abs_prob_diff_vs_fp32']:.2e}."]
    return "\n".join(lines)


def main() -> None:
    """Export, compare, time, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a model file (RUN/model.pt)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root with splits.csv (or train/val/test)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--calibration-count", type=int, default=300, help="train photos to calibrate int8 on")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every backend")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos of the split")
    parser.add_argument("--export-dir", type=Path, default=None, help="keep the export here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also PyTorch in bf16 (default: where the CPU has AMX units, as predict runs there)")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    from agripatch.device import cpu_bf16_is_faster
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    if args.bf16 is None:
        args.bf16 = cpu_bf16_is_faster()

    model = args.model.resolve()
    run_name = model.parent.name if model.name == "model.pt" else model.stem
    out_json = args.out or REPO / "benchmarks" / "results" / "export" / f"{run_name}-{args.split}.json"
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.export_dir or Path(scratch) / "export"
        print(f"exporting {model} -> {folder}", flush=True)
        folder, export_s = export(model, args.data, folder, args.calibration_count)
        predictors = {"torch": Predictor.from_file(model, device="cpu", precision="float32"),
                      "onnx_fp32": OnnxPredictor(folder, threads=args.threads),
                      "onnx_int8": OnnxPredictor(folder, int8=True, threads=args.threads)}
        if args.bf16:  # the PyTorch default on CPUs with AMX units
            predictors["torch_bf16"] = Predictor.from_file(model, device="cpu", precision="bfloat16")
        for p in predictors.values():
            p.thresholds = list(predictors["torch"].thresholds)
        paths, labels = split_photos(args.data, args.split, predictors["torch"].classes, args.limit)
        print(f"running {len(paths)} photos through {', '.join(predictors)}", flush=True)
        results, seconds, kept = run_all(predictors, args.data, paths, args.batch_size)
        manifest = json.loads((folder / "cascade.json").read_text())
        files = {name: (folder / name).stat().st_size / 1e6 for name in sorted(os.listdir(folder))}
        sizes = {"model.pt": model.stat().st_size / 1e6,
                 "fp32": sum(v for k, v in files.items() if k.endswith(".onnx") and ".int8." not in k),
                 "int8": sum(v for k, v in files.items() if k.endswith(".int8.onnx"))}
    n = len(results["torch"])
    report = {
        "model": str(model), "data": str(args.data.resolve()), "split": args.split, "threads": args.threads,
        "batch_size": args.batch_size, "unreadable": len(paths) - len(kept), "export_s": export_s,
        "calibration": {k: manifest["calibration"][k] for k in ("photos", "unreadable", "requested")},
        "comparison": compare(results, [labels[i] for i in kept]),
        "speed": {name: {"model_s": s, "photos_per_s": n / s if s > 0 else 0.0} for name, s in seconds.items()},
        "sizes_mb": sizes, "files_mb": files, "versions": manifest["versions"],
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(table(report))
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
