"""Photos/s and peak memory of `predict folder` (the cascade) against the full-image baseline classifier.

    python -m benchmarks.predict_speed [--model MODEL] [--small 60] [--large 8] [--threads 1] [--workers 2]
                                       [--small-src FOLDER] [--large-src FOLDER]

Two folders are made once under --work: ``small/`` (synthetic 500x500 JPEGs, like iBean) and ``large/``
(4000x3000 12-MP JPEGs, synthetic leaves upscaled); with ``--small-src`` real photos instead (linked), with
``--large-src`` real photos upscaled to 12 MP, aspect kept (``large_real/``). Each folder is read five ways, each in its own
process so that peak RSS is its own:

* ``cascade``: ``run_predict_folder`` with every output (crops, overlays, logs, index.html);
* ``cascade-lean``: ``run_predict_folder --no-crops --no-overlays`` (logs and index.html only);
* ``cascade-lean-eager``: the same with every photo's full decode made in the loader, as before deferred decoding
  (:class:`agripatch.io.deferred.DeferredPhoto`; it only differs with 0 ``--workers``);
* ``cascade-model``: the same DataLoader and ``PatchPipeline.predict``, nothing written (model + decode cost; photos
  decoded for their glance first with 0 ``--workers``, as ``cascade-lean``);
* ``baseline``: the model file's full-image baseline classifier at its input size, on the same reader
  (reduced JPEG decode down to that size) and DataLoader.

With ``--onnx`` the model is also exported (`agripatch export --format onnx --int8`, calibrated on the small
folder) into --work and four more modes run: ``onnx`` and ``onnx-lean`` (`predict folder --backend
onnxruntime`, with and without review images), ``onnx-int8-lean`` (the int8 graphs), and ``baseline-onnx``
(the same baseline network exported to ONNX, on ONNX Runtime, so each backend has its own baseline).

``--precisions float32,bfloat16`` runs every PyTorch mode in each precision (`predict folder --precision`; the
baseline's network too, as `evaluate` runs it), interleaved, each compared with the baseline of its own precision.

Without --model an UNTRAINED model is built like the iBean recipe (anchornet_mbv2_s8 glance 160, patches
128, mobilenetv2_100 classifier and baseline at 224): untrained, no photo exits early, so the cascade's
numbers are its worst case (all K patches read). Prints a table, writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agripatch.pipeline.config import PREDICT_BATCH_SIZE  # noqa: E402
from benchmarks.machine import cpu_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_folders(work: Path, small: int, large: int) -> tuple[Path, Path]:
    """Synthetic 500x500 photos and 4000x3000 upscaled ones (made once; reused when present)."""
    import cv2

    from agripatch.data.synth import generate_synthetic

    small_dir, large_dir = work / "small", work / "large"
    if not small_dir.is_dir() or len(list(small_dir.rglob("*.jpg"))) != small:
        per_class = max(1, small // 3)
        generate_synthetic(small_dir, classes=3, per_class=per_class, size=500)
        extra = sorted(small_dir.rglob("*.jpg"))[small:]
        for path in extra:
            path.unlink()
    if not large_dir.is_dir() or len(list(large_dir.glob("*.jpg"))) != large:
        large_dir.mkdir(parents=True, exist_ok=True)
        sources = sorted(small_dir.rglob("*.jpg"))
        for i in range(large):
            image = cv2.imread(str(sources[i % len(sources)]))
            big = cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(large_dir / f"large_{i:03d}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return small_dir, large_dir


def _round_robin(source: Path, count: int) -> list[str]:
    """`count` photos of SOURCE (relative paths) taken round-robin over its class folders (sorted)."""
    from agripatch.data.folder import scan_image_folder

    index = scan_image_folder(source)
    by_class = [[path for path, label in index.samples if label == c] for c in range(len(index.classes))]
    return [paths[i] for i in range(max(map(len, by_class))) for paths in by_class if i < len(paths)][:count]


def link_real_photos(source: Path, folder: Path, count: int) -> Path:
    """A folder of links to `count` real photos taken round-robin over SOURCE's class folders (sorted)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, relative in enumerate(_round_robin(source, count)):
        link = folder / f"{i:04d}_{Path(relative).name}"
        if not link.exists():
            link.symlink_to((source / relative).resolve())
    return folder


def upscale_real_photos(source: Path, folder: Path, count: int, megapixels: float = 12.0) -> Path:
    """`count` real photos of SOURCE (round-robin over its classes) upscaled to about ``megapixels``, aspect kept
    (cubic, JPEG quality 90; made once): the 12-MP shape with the exits real photos take, where synthetic leaves
    send every photo to the last exit."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, relative in enumerate(_round_robin(source, count)):
        target = folder / f"{i:04d}_{Path(relative).stem}.jpg"
        if target.exists():
            continue
        image = cv2.imread(str(source / relative))
        scale = (megapixels * 1e6 / (image.shape[0] * image.shape[1])) ** 0.5
        big = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(target), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def make_model(path: Path) -> Path:
    """An untrained model file shaped like the iBean recipe."""
    import torch

    from agripatch.models import create_anchornet, create_classifier
    from agripatch.pipeline.bundle import ModelSpec, save_model_file

    torch.manual_seed(0)
    classes = ["healthy", "angular_leaf_spot", "bean_rust"]
    anchornet = create_anchornet("anchornet_mbv2_s8", num_classes=3, pretrained=False, class_names=classes,
                                 input_size=160)
    classifier, cfg = create_classifier("mobilenetv2_100", 3, pretrained=False)
    baseline, bcfg = create_classifier("mobilenetv2_100", 3, pretrained=False)
    return save_model_file(
        path, classes=classes,
        anchornet=ModelSpec.from_module("anchornet_mbv2_s8", anchornet, anchornet.cfg["mean"], anchornet.cfg["std"], 160),
        classifier=ModelSpec.from_module("mobilenetv2_100", classifier, cfg["mean"], cfg["std"], 128),
        baseline=ModelSpec.from_module("mobilenetv2_100", baseline, bcfg["mean"], bcfg["std"], 224),
        cascade={"k": 3, "glance_size": 160, "patch_size": 128, "iou_threshold": 0.25, "glance": "anchornet",
                 "score_mode": "predicted", "thresholds": [0.9, 0.9, 0.9, 0.0]},
    )


def onnx_baseline(network, size: int, path: Path):
    """The baseline network on ONNX Runtime (exported once to ``path``), callable like the torch module."""
    import numpy as np
    import onnxruntime as ort
    import torch

    if not path.exists():
        torch.onnx.export(network, torch.zeros(1, 3, size, size), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])


def export_onnx(model: Path, calibration: Path) -> Path:
    """`agripatch export --format onnx --int8` of ``model`` into ``model``'s folder / export (once), in its own
    process: Linux carries a parent's peak RSS into the children it forks, and the export's would mask theirs."""
    out = model.parent / "export"
    if not (out / "cascade.json").exists():
        subprocess.run([sys.executable, "-m", "agripatch", "export", str(model), "--format", "onnx", "--out", str(out),
                        "--int8", "--calibration", str(calibration)], check=True, capture_output=True)
    return out


def _peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def child(mode: str, folder: Path, model: Path, out: Path, batch_size: int, workers: int,
          precision: str = "auto") -> dict:
    """Run one measurement in this (fresh) process and return its numbers."""
    import torch

    from agripatch.allocator import tune_memory_allocator

    tune_memory_allocator()  # every mode runs as `predict folder` does
    from torch.utils.data import DataLoader

    from agripatch.data.photos import PhotoDataset
    from agripatch.io.sources import photo_files
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.predictor_base import defers_full_decode
    from agripatch.predict.folder import PredictOptions, run_predict_folder
    from agripatch.predict.scan import iter_photos

    label = mode
    if mode == "cascade-lean-eager":  # every photo's full decode made up front, as before deferred decoding
        from agripatch.predict import folder as folder_module

        folder_module._defers_full_decode = lambda options, predictor: False
        mode = "cascade-lean"
    if mode in ("cascade", "cascade-lean", "onnx", "onnx-lean", "onnx-int8-lean"):
        review = mode in ("cascade", "onnx")
        onnx = mode.startswith("onnx")
        summary = run_predict_folder(PredictOptions(
            input=folder, model=model.parent / "export" if onnx else model, out=out, recursive=True,
            batch_size=batch_size, workers=workers, device="cpu", overwrite=True, quiet=True, crops=review,
            overlays=review, backend="onnxruntime" if onnx else "torch", int8=mode == "onnx-int8-lean",
            precision="auto" if onnx else precision))
        # The photo loop only (DataLoader start included), like the two other modes; the model load and
        # index.html are outside it.
        photos, mean_macs = summary.photos, summary.mean_macs
        wall = photos / summary.photos_per_s if summary.photos_per_s else float("nan")
        ran = json.loads((out / "summary.json").read_text())["precision"]
    else:
        bundle = load_model_file(model)
        dtype = bundle.place(torch.device("cpu"), "float32" if mode == "baseline-onnx" else precision)
        ran = "float32 (onnx)" if mode == "baseline-onnx" else bundle.precision
        paths = list(iter_photos(folder, recursive=True))
        cfg = bundle.pipeline.config
        if mode == "cascade-model":
            min_side = bundle.pipeline.decode_min_side()
            size = cfg.glance_size
        else:
            if bundle.baseline is None:
                return {"mode": mode, "skipped": "the model file has no baseline"}
            size = min_side = int(bundle.baseline_spec["input_size"])
        defer = mode == "cascade-model" and defers_full_decode(workers=workers)  # as `predict folder --no-crops ...`
        dataset = PhotoDataset(folder, paths, min_side=min_side, glance_size=size, defer_full=defer)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list)
        photos, macs_total = 0, 0
        start = time.perf_counter()  # the photo loop only, DataLoader start included
        with torch.inference_mode():
            if mode.startswith("baseline"):
                from agripatch.pipeline.cascade import normalize
                from agripatch.pipeline.macs import count_macs

                model_ = bundle.baseline.eval()
                mean, std = bundle.baseline_spec["mean"], bundle.baseline_spec["std"]
                per_photo = count_macs(model_, (1, 3, size, size))
                if mode == "baseline-onnx":
                    model_ = onnx_baseline(model_, size, model.parent / "baseline.onnx")
            for batch in loader:
                good = [item for item in batch if item["image"] is not None]
                if not good:
                    continue
                glances = torch.stack([item["glance"] for item in good])
                if mode.startswith("baseline"):
                    torch.softmax(model_(normalize(glances.float(), mean, std).to(dtype)).float(), dim=1)
                    macs_total += per_photo * len(good)
                else:
                    results = bundle.pipeline.predict([item["image"] for item in good], glances, files=photo_files(good))
                    macs_total += sum(r.macs for r in results)
                photos += len(good)
        wall = time.perf_counter() - start
        mean_macs = macs_total / max(photos, 1)
    own, children = _peak_rss_mb()
    return {"mode": label, "precision": ran, "photos": photos, "wall_s": round(wall, 3), "photos_per_s": round(photos / wall, 2),
            "mean_gmacs": round(mean_macs / 1e9, 4), "peak_rss_mb": round(own, 1), "peak_worker_rss_mb": round(children, 1)}


def _medians(rows: list[dict]) -> list[dict]:
    """Each (folder, mode)'s median photos/s over the rounds, and its ratio to the same folder's ``baseline``."""
    import statistics

    by_round: dict[tuple[str, str], dict[int, float]] = {}  # (folder, mode) -> round -> photos/s
    for row in rows:
        if "photos_per_s" in row:
            by_round.setdefault((row["folder"], row["mode"]), {})[row.get("round", 0)] = row["photos_per_s"]
    out = [{"folder": folder, "mode": mode, "runs": len(rates), "median_photos_per_s": statistics.median(rates.values())}
           for (folder, mode), rates in by_round.items()]
    # each mode over the baseline of its own precision (modes named ``mode@precision`` with --precisions)
    base = {(row["folder"], row["mode"].partition("@")[2]): row["median_photos_per_s"] for row in out
            if row["mode"].partition("@")[0] == "baseline"}
    for row in out:
        key = (row["folder"], row["mode"].partition("@")[2])
        if key in base:
            row["over_baseline"] = round(row["median_photos_per_s"] / base[key], 3)
        mine = by_round[(row["folder"], row["mode"])]  # paired by round: over every other mode's in the same round
        row["over_by_round"] = {
            mode: [round(mine[k] / theirs[k], 3) for k in sorted(mine) if k in theirs]
            for (folder, mode), theirs in by_round.items() if folder == row["folder"] and mode != row["mode"]}
    for row in out:
        print(f"{row['folder']:10s} {row['mode']:18s} median {row['median_photos_per_s']:7.2f} photos/s over "
              f"{row['runs']} run(s)" + (f", {row['over_baseline']:.2f}x the baseline" if "over_baseline" in row else ""))
    return out


def main() -> None:
    """Make the folders and the model, run every (folder, mode) in a subprocess, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a model file; default: an untrained iBean-like one")
    parser.add_argument("--small", type=int, default=60, help="500x500 photos")
    parser.add_argument("--large", type=int, default=8, help="4000x3000 photos")
    parser.add_argument("--small-src", type=Path, default=None,
                        help="take the small folder's photos from this ImageFolder (e.g. real iBean photos) instead of synthesising")
    parser.add_argument("--large-src", type=Path, default=None,
                        help="upscale --large real photos from this ImageFolder (round-robin over classes) to 12 MP "
                             "instead of synthetic leaves")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decoding workers")
    parser.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE,
                        help="photos per call (default: what predict uses)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "agripatch_predict_speed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "predict_speed.json")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every mode this many times, interleaved; the JSON adds each mode's median photos/s")
    parser.add_argument("--modes", default=None,
                        help="comma-separated modes to run (default: all of them)")
    parser.add_argument("--onnx", action="store_true", help="also export to ONNX (+int8) and run the onnx modes")
    parser.add_argument("--precisions", default="auto",
                        help="comma-separated PyTorch precisions (auto, float32, bfloat16), each mode run in each; "
                             "with several, modes are named mode@precision and compared with their own baseline")
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        mode, folder, model = args.child
        result = child(mode, Path(folder), Path(model), args.work / f"out_{Path(folder).name}",
                       args.batch_size, args.workers, args.precision)
        print(json.dumps(result))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    small_dir, large_dir = make_folders(args.work, args.small, args.large)
    if args.small_src is not None:
        small_dir = link_real_photos(args.small_src, args.work / "small_real", args.small)
    if args.large_src is not None:
        large_dir = upscale_real_photos(args.large_src, args.work / "large_real", args.large)
    model = args.model or make_model(args.work / "model.pt")
    modes = ["cascade", "cascade-lean", "cascade-lean-eager", "cascade-model", "baseline"]
    if args.onnx:
        local = args.work / "onnx_model" / "model.pt"  # the export goes beside a copy, not into the run folder
        source = Path(model).read_bytes()
        if not local.exists() or local.read_bytes() != source:
            shutil.rmtree(local.parent, ignore_errors=True)  # another model's copy, export and baseline.onnx
            local.parent.mkdir(parents=True)
            local.write_bytes(source)
        export_onnx(local, small_dir)
        model = local
        modes += ["onnx", "onnx-lean", "onnx-int8-lean", "baseline-onnx"]
    if args.modes:
        modes = [m for m in args.modes.split(",") if m]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    precisions = [p for p in args.precisions.split(",") if p]
    runs = ((f, m, p, r) for f in (small_dir, large_dir) for r in range(args.rounds) for m in modes for p in precisions)
    for folder, mode, precision, round_ in runs:
        command = [sys.executable, "-m", "benchmarks.predict_speed", "--child", mode, str(Path(folder).resolve()),
                   str(Path(model).resolve()), "--threads", str(args.threads), "--precision", precision,
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--work", str(args.work)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True, cwd=REPO)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["mode"] = f"{row['mode']}@{precision}" if len(precisions) > 1 else row["mode"]
        row["folder"] = folder.name
        row["round"] = round_
        rows.append(row)
        print(f"{folder.name:6s} {mode:14s} " + (row.get("skipped") or
              f"{row['photos']:4d} photos {row['photos_per_s']:7.2f} photos/s  {row['mean_gmacs']:.3f} GMACs/photo  "
              f"peak RSS {row['peak_rss_mb']:.0f} MiB (workers {row['peak_worker_rss_mb']:.0f} MiB)"), flush=True)
    report = {"threads": args.threads, "workers": args.workers, "batch_size": args.batch_size,
              "model": str(model), "untrained_model": args.model is None, "cpu_count": os.cpu_count(),
              "cpu": cpu_description(), "rounds": args.rounds, "rows": rows, "medians": _medians(rows)}
    print(f"CPU: {report['cpu']['model']} ({' '.join(report['cpu']['flags'])}), {args.threads} thread(s) a process, "
          f"{args.workers} decoding workers, batch {args.batch_size}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
