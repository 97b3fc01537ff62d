"""The steps of benchmarks/gpu_check.sh: each measures one thing and writes WORK/steps/<step>.json.

    python -m benchmarks.gpu_check env       --work W          # torch / CUDA / cuDNN / driver versions
    python -m benchmarks.gpu_check pytest    --work W          # pytest -m cuda tests/gpu (junit counts, durations)
    python -m benchmarks.gpu_check train     --work W          # the ibean recipe with AMP, in-process: samples/s, peak memory
    python -m benchmarks.gpu_check evaluate  --work W          # `agripatch evaluate` on the val split: cascade and baseline top-1
    python -m benchmarks.gpu_check predict   --work W [--gpu-decode]   # `predict folder` on 1,000 photos vs decode-only
    python -m benchmarks.gpu_check torchrun  --work W          # `torchrun --nproc_per_node 1 ... train` 1 epoch + a collective
    python -m benchmarks.gpu_check report    --work W --out D  # D/gpu_check.json and D/gpu_check.md from every step so far
    python -m benchmarks.gpu_check pack-data --dest .gpu_carry   # split the photos to carry them (see gpu_check.sh)

Common flags: ``--device cuda|cpu`` (default cuda), ``--dry-run`` (tiny synthetic leaves, 1 epoch, every photo:
the plumbing on CPU in about a minute), ``--data DIR`` (an ImageFolder; default ../shared/data/ibean/train),
``--workers`` (DataLoader workers for training, decoding and predict; default 8, 0 in a dry run),
``--batch-size`` (predict and decode batches, default 64).

Every step writes its JSON even when it fails (``status`` "failed" and the error) and then exits 1, so the
shell script can go on, report everything measured, and still fail at the end.

Decode vs model: ``predict`` times `predict folder` twice (with crops and overlays, and ``--no-crops
--no-overlays``) and the SAME photos through :class:`agripatch.data.photos.PhotoDataset` in a DataLoader
with the same workers and batch size, decoding only. When the lean run reaches (nearly) the decode-only
rate, decoding sets the pace; otherwise the model (and, for the full run, writing the review images)
does. ``--gpu-decode`` also times ``torchvision.io.decode_jpeg(list_of_byte_tensors, device=...)`` on the
same files (read into memory first; full-size decode, then the glance resize on the device), to decide
whether decoding on the GPU is worth wiring into predict (it is not wired in).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ibean" / "train"
RECIPE = "ibean"
PREDICT_PHOTOS = 1000
STEPS = ("env", "pytest", "train", "evaluate", "predict", "torchrun")


# ------------------------------------------------------------------------------------------ plumbing


@contextmanager
def step(work: Path, name: str):
    """Yield a dict to fill with measurements; write WORK/steps/<name>.json however the step ends."""
    record: dict[str, Any] = {"step": name, "status": "running"}
    start = time.perf_counter()
    try:
        yield record
        record["status"] = "ok" if record.get("status") == "running" else record["status"]
    except BaseException as error:  # noqa: BLE001 - recorded, then re-raised
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()[-4000:]
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - start, 2)
        folder = work / "steps"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def python() -> list[str]:
    return [sys.executable]


def run(command: list[str], log: Path, timeout: float | None = None, env: dict | None = None) -> tuple[int, float]:
    """Run a command with its output in ``log`` (and echoed); returns (exit code, seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                              env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    print(log.read_text()[-3000:], flush=True)
    return done.returncode, seconds


def data_root(args) -> Path:
    """The dataset every step uses: a prepared copy of --data (20% stratified val, seed 0), or, in a dry run,
    tiny synthetic leaves prepared the same way."""
    from benchmarks.protocol import validation_root

    work = args.work / "dataset"
    if args.dry_run:
        source = args.work / "synthetic"
        if not source.is_dir():
            from agripatch.data.synth import generate_synthetic

            generate_synthetic(source, classes=3, per_class=8, size=256, seed=0)
    else:
        source = Path(args.data)
        if not source.is_dir():
            raise SystemExit(f"{source} is not here: pass --data (an ImageFolder of the iBean photos); on a lent GPU "
                             "machine ../shared does not travel, see `pack-data` in this file")
    return validation_root(source, work / "data")  # train_speed.py's split: 20% val, seed 0


def train_overrides(args) -> list[str]:
    return ["runtime.amp=true", f"data.workers={args.workers}"]


def model_path(args) -> Path:
    return args.work / "run" / "model.pt"


def cuda_memory_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


# ---------------------------------------------------------------------------------------------- steps


def cmd_env(args) -> None:
    with step(args.work, "env") as record:
        import timm
        import torch
        import torchvision

        record.update(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                      torchvision=torchvision.__version__, timm=timm.__version__,
                      cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                      cuda_available=torch.cuda.is_available(), cpus=os.cpu_count(), device=args.device,
                      dry_run=args.dry_run)
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            record.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                          gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
                          nccl=".".join(map(str, torch.cuda.nccl.version())))
        smi = shutil.which("nvidia-smi")
        if smi:
            query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                   capture_output=True, text=True)
            record["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
        print(json.dumps(record, indent=2))
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA GPU")


def cmd_pytest(args) -> None:
    with step(args.work, "pytest") as record:
        junit = args.work / "pytest.xml"
        code, seconds = run(python() + ["-m", "pytest", "-m", "cuda", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider",
                                        f"--junitxml={junit}"], args.work / "logs" / "pytest.log")
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        cases = []
        for case in suite.iter("testcase"):
            outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else (
                "skipped" if case.find("skipped") is not None else "passed")
            cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
        record.update(exit_code=code, counts=counts, cases=cases, seconds_total=round(seconds, 1))
        import torch

        if code != 0:
            raise RuntimeError(f"pytest -m cuda tests/gpu exited {code}: {counts}")
        if torch.cuda.is_available() and counts["skipped"]:
            raise RuntimeError(f"{counts['skipped']} CUDA test(s) skipped on a machine with a GPU")


def cmd_train(args) -> None:
    with step(args.work, "train") as record:
        import torch

        from agripatch.engine import loop
        from agripatch.engine.train import run_training

        root = data_root(args)
        run_dir = args.work / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        peaks: dict[str, float | None] = {}
        original = loop.StageRunner.run

        def measured(self):  # per-stage peak GPU memory, read around each stage's own run
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            try:
                return original(self)
            finally:
                peaks[self.stage.name] = cuda_memory_gib(args.device)

        loop.StageRunner.run = measured
        try:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run_training(RECIPE, root, run_dir, epochs=args.epochs if args.epochs else (1 if args.dry_run else None),
                         device=args.device, overrides=train_overrides(args), quiet=True)
            record["wall_s"] = round(time.perf_counter() - start, 1)
        finally:
            loop.StageRunner.run = original
        record.update(recipe=RECIPE, overrides=train_overrides(args), data=str(root), stages=stage_speeds(run_dir, peaks),
                      peak_gpu_memory_gib=max((v for v in peaks.values() if v is not None), default=None))
        print(json.dumps(record["stages"], indent=2))


def stage_speeds(run_dir: Path, peaks: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Per stage, from metrics.csv: epochs, seconds, samples/s over the whole stage (sum of images_per_s x
    seconds over sum of seconds), last val_acc; plus the peak GPU memory read around the stage."""
    stages: dict[str, dict[str, Any]] = {}
    with open(run_dir / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            entry = stages.setdefault(row["stage"], {"epochs": 0, "seconds": 0.0, "samples": 0.0})
            seconds, rate = float(row["seconds"]), float(row["images_per_s"])
            entry["epochs"] += 1
            entry["seconds"] += seconds
            entry["samples"] += rate * seconds
            entry["val_acc"] = float(row["val_acc"]) if row.get("val_acc") not in (None, "", "nan") else None
            if entry["val_acc"] is not None:  # the model file keeps the best epoch's weights
                entry["best_val_acc"] = max(entry.get("best_val_acc", 0.0), entry["val_acc"])
    for name, entry in stages.items():
        entry["samples_per_s"] = round(entry["samples"] / max(entry["seconds"], 1e-9), 1)
        entry["seconds"] = round(entry["seconds"], 1)
        entry["samples"] = round(entry["samples"])
        entry["peak_gpu_memory_gib"] = peaks.get(name)
    return stages


def cmd_evaluate(args) -> None:
    with step(args.work, "evaluate") as record:
        root = data_root(args)
        out = args.work / "run" / "eval_val"
        code, seconds = run(python() + ["-m", "agripatch", "evaluate", str(model_path(args)), "--data", str(root),
                                        "--split", "val", "--out", str(out), "--device", args.device],
                            args.work / "logs" / "evaluate.log")
        if code != 0:
            raise RuntimeError(f"agripatch evaluate exited {code}")
        summary = json.loads((out / "summary.json").read_text())
        baseline = summary.get("baseline") or {}
        record.update(val_images=summary.get("num_images"), cascade_top1=summary.get("top1"),
                      cascade_mean_gmacs=summary.get("mean_gmacs"), thresholds=summary.get("thresholds"),
                      exit_histogram=summary.get("exit_histogram"), all_patches_top1=summary.get("all_patches_top1"),
                      baseline=f"{baseline.get('arch')}@{baseline.get('input_size')}" if baseline else None,
                      baseline_top1=baseline.get("top1"), baseline_gmacs=baseline.get("mean_gmacs"),
                      cascade_images_per_s=summary.get("images_per_s"), baseline_images_per_s=baseline.get("images_per_s"),
                      seconds_with_startup=round(seconds, 1))


def photo_folder(args) -> tuple[Path, list[str]]:
    """A flat folder of links to the first 1,000 photos of the dataset (sorted by class, then name; every
    photo in a dry run). A smaller dataset (a partial carry) is linked round and round up to 1,000: each
    link is decoded and written as its own photo."""
    from agripatch.data.folder import scan_image_folder

    root = data_root(args)
    samples = sorted(path for path, _ in scan_image_folder(root).samples)
    picked = samples if args.dry_run else [samples[i % len(samples)] for i in range(PREDICT_PHOTOS)]
    folder = args.work / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = []
    for i, relative in enumerate(picked):
        name = f"{i:04d}_{Path(relative).name}"
        (folder / name).symlink_to((root / relative).resolve())
        names.append(name)
    return folder, names


def decode_only(folder: Path, names: list[str], args) -> dict[str, Any]:
    """Photos/s of predict's own reader (PhotoDataset: reduced decode + glance) in the same DataLoader, no model."""
    from torch.utils.data import DataLoader

    from agripatch.data.photos import PhotoDataset
    from agripatch.pipeline.bundle import load_model_file

    pipeline = load_model_file(model_path(args)).pipeline
    dataset = PhotoDataset(folder, sorted(names), min_side=pipeline.decode_min_side(),
                           glance_size=pipeline.config.glance_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers, collate_fn=list)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    seconds = time.perf_counter() - start
    return {"photos": count, "seconds": round(seconds, 2), "photos_per_s": round(count / seconds, 1),
            "decode_min_side": pipeline.decode_min_side(), "glance_size": pipeline.config.glance_size}


def batch_decode(folder: Path, names: list[str], args) -> dict[str, Any]:
    """torchvision.io.decode_jpeg on a list of byte tensors per batch, on --device; then the glance resize there."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    from agripatch.pipeline.bundle import load_model_file

    glance = load_model_file(model_path(args)).pipeline.config.glance_size
    device = torch.device(args.device)
    start = time.perf_counter()
    data = [torch.frombuffer(bytearray((folder / name).read_bytes()), dtype=torch.uint8) for name in sorted(names)]
    read_s = time.perf_counter() - start
    batches = [data[i:i + args.batch_size] for i in range(0, len(data), args.batch_size)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)  # warm-up (CUDA context, nvJPEG handles)
    sync()
    timings = {}
    for with_glance in (False, True):
        start = time.perf_counter()
        for batch in batches:
            images = decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)
            if with_glance:
                for image in images:
                    F.interpolate(image[None].float() / 255, size=(glance, glance), mode="bilinear", antialias=True)
        sync()
        timings["decode_glance" if with_glance else "decode"] = time.perf_counter() - start
    n = len(data)
    return {"device": str(device), "photos": n, "bytes_mib": round(sum(len(d) for d in data) / 2**20, 1),
            "read_s": round(read_s, 2), "decode_photos_per_s": round(n / timings["decode"], 1),
            "decode_glance_photos_per_s": round(n / timings["decode_glance"], 1),
            "note": "full-size decode of in-memory bytes (file reading excluded); PhotoDataset decodes reduced "
                    "(DCT scaling) when the cascade cannot use more pixels"}


def cmd_predict(args) -> None:
    with step(args.work, "predict") as record:
        folder, names = photo_folder(args)
        record.update(photos=len(names), workers=args.workers, batch_size=args.batch_size)
        runs = {}
        from agripatch.device import evidence_writers

        record["writers"] = evidence_writers(args.device.startswith("cuda"), args.workers)
        for label, extra in (("full", []), ("full_1_writer", ["--writers", "1"]), ("lean", ["--no-crops", "--no-overlays"])):
            out = args.work / f"predict_{label}"
            code, seconds = run(python() + ["-m", "agripatch", "predict", "folder", str(folder), "--model",
                                            str(model_path(args)), "--out", str(out), "--device", args.device,
                                            "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                                            "--overwrite", "--quiet", *extra], args.work / "logs" / f"predict_{label}.log")
            if code != 0:
                raise RuntimeError(f"predict folder ({label}) exited {code}")
            summary = json.loads((out / "summary.json").read_text())
            runs[label] = {"photos_per_s": round(summary["photos_per_s"], 1), "photos": summary["photos"],
                           "errors": summary["errors"], "exit_histogram": summary["exit_histogram"],
                           "mean_gmacs": summary["mean_gmacs"], "device": summary["device"],
                           "wall_s_with_startup": round(seconds, 1)}
        record["predict"] = runs
        record["decode_only"] = decode_only(folder, names, args)
        decode_rate, lean_rate = record["decode_only"]["photos_per_s"], runs["lean"]["photos_per_s"]
        record["lean_over_decode"] = round(lean_rate / decode_rate, 3)
        record["pace"] = ("decoding sets the pace (the lean run reaches >= 85% of the decode-only rate)"
                          if lean_rate >= 0.85 * decode_rate else
                          "the model sets the pace (the lean run stays below 85% of the decode-only rate)")
        record["full_over_lean"] = round(runs["full"]["photos_per_s"] / lean_rate, 3)
        if args.gpu_decode:
            record["batch_decode"] = batch_decode(folder, names, args)
        print(json.dumps({k: v for k, v in record.items() if k != "status"}, indent=2))


def cmd_torchrun(args) -> None:
    with step(args.work, "torchrun") as record:
        root = data_root(args)
        out = args.work / "torchrun_run"
        shutil.rmtree(out, ignore_errors=True)
        launch = python() + ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        code, seconds = run(launch + ["-m", "agripatch", "train", "--recipe", RECIPE, "--data", str(root), "--out",
                                      str(out), "--device", args.device, "--epochs", "1", *train_overrides(args)],
                            args.work / "logs" / "torchrun_train.log")
        record.update(train_exit_code=code, train_wall_s=round(seconds, 1))
        if code != 0 or not (out / "model.pt").is_file():
            raise RuntimeError(f"torchrun train exited {code}")
        record["stages"] = stage_speeds(out, {})
        # WORLD_SIZE=1: agripatch then trains without a process group, so the training above does not touch
        # NCCL; one collective through the group torchrun sets up does.
        code, seconds = run(launch + [str(Path(__file__).resolve()), "collective", "--work", str(args.work),
                                      "--device", args.device], args.work / "logs" / "torchrun_collective.log")
        collective = json.loads((args.work / "steps" / "collective.json").read_text())
        record["collective"] = {k: collective.get(k) for k in ("status", "backend", "value", "error")}
        if code != 0 or collective.get("status") != "ok":
            raise RuntimeError(f"the torchrun collective exited {code}: {collective.get('error')}")


def cmd_collective(args) -> None:
    """Run under torchrun: join the group (NCCL on CUDA, gloo on CPU), all_reduce, barrier."""
    with step(args.work, "collective") as record:
        import torch
        import torch.distributed as dist

        cuda = args.device.startswith("cuda")
        backend = "nccl" if cuda else "gloo"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        value = torch.full((4,), float(dist.get_rank() + 1), device=device)
        dist.all_reduce(value)
        dist.barrier()
        record.update(backend=backend, world_size=dist.get_world_size(), value=value.tolist())
        dist.destroy_process_group()


# -------------------------------------------------------------------------------------------- report


def cmd_report(args) -> int:
    """gpu_check.json and gpu_check.md from every step's JSON; returns 1 when a step failed or is missing."""
    steps = {}
    for name in STEPS:
        path = args.work / "steps" / f"{name}.json"
        rc_file = args.work / "steps" / f"{name}.rc"
        if path.is_file():
            steps[name] = json.loads(path.read_text())
        else:
            steps[name] = {"step": name, "status": "not run"}
        if rc_file.is_file():
            code = steps[name]["exit_code"] = int(rc_file.read_text().strip() or 0)
            if code in (124, 137):
                steps[name]["status"] = "timed out"
            elif code and steps[name]["status"] in ("ok", "not run", "running"):
                steps[name]["status"] = f"failed (exit {code})"
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dry_run": args.dry_run, "device": args.device,
              "steps": steps}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(result))
    print((args.out / "gpu_check.md").read_text())
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0 if all(s.get("status") == "ok" for s in steps.values()) else 1


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: dict) -> str:
    steps = result["steps"]
    env = steps["env"]
    lines = [f"# GPU check {result['when']}" + (" (dry run)" if result["dry_run"] else ""), "",
             f"{env.get('gpu', 'no GPU')} · driver/nvidia-smi: {env.get('nvidia_smi', '–')} · torch {env.get('torch', '–')} "
             f"(CUDA {env.get('torch_cuda', '–')}, cuDNN {env.get('cudnn', '–')}, NCCL {env.get('nccl', '–')}) · "
             f"torchvision {env.get('torchvision', '–')} · timm {env.get('timm', '–')}", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    tests = steps["pytest"].get("counts", {})
    evaluate, predict, torchrun = steps["evaluate"], steps["predict"], steps["torchrun"]
    results = {
        "env": f"CUDA available: {env.get('cuda_available')}, bf16: {env.get('bf16')}",
        "pytest": (f"{tests.get('tests', 0)} tests, {tests.get('failures', 0)} failed, {tests.get('errors', 0)} errors, "
                   f"{tests.get('skipped', 0)} skipped") if tests else "",
        "train": f"peak GPU memory {_fmt(steps['train'].get('peak_gpu_memory_gib'), 2)} GiB, "
                 f"{_fmt(steps['train'].get('wall_s'), 1)} s wall",
        "evaluate": f"val top-1 cascade {_fmt(evaluate.get('cascade_top1'), 4)} at {_fmt(evaluate.get('cascade_mean_gmacs'))} "
                    f"GMACs, baseline {evaluate.get('baseline') or ''} {_fmt(evaluate.get('baseline_top1'), 4)}",
        "predict": (f"{predict.get('photos', '–')} photos: {_fmt(predict.get('predict', {}).get('full', {}).get('photos_per_s'), 1)}"
                    f" photos/s with {predict.get('writers', '–')} writers (1 writer "
                    f"{_fmt(predict.get('predict', {}).get('full_1_writer', {}).get('photos_per_s'), 1)}; lean {_fmt(predict.get('predict', {}).get('lean', {}).get('photos_per_s'), 1)}, "
                    f"decode-only {_fmt(predict.get('decode_only', {}).get('photos_per_s'), 1)}); {predict.get('pace', '')}"),
        "torchrun": f"1 process, 1 epoch; collective: {torchrun.get('collective', {}).get('backend', '–')} "
                    f"{torchrun.get('collective', {}).get('status', '')}",
    }
    for name in STEPS:
        s = steps[name]
        status = s.get("status", "?") + (f": {s['error'][:120]}" if s.get("error") else "")
        lines.append(f"| {name} | {status} | {_fmt(s.get('seconds'), 1)} | {results[name]} |")
    stages = steps["train"].get("stages") or {}
    if stages:
        lines += ["", "| training stage (AMP) | epochs | samples/s | seconds | peak GPU GiB | last / best val acc |",
                  "|---|---|---|---|---|---|"]
        for name, s in stages.items():
            lines.append(f"| {name} | {s['epochs']} | {_fmt(s['samples_per_s'], 1)} | {_fmt(s['seconds'], 1)} | "
                         f"{_fmt(s.get('peak_gpu_memory_gib'), 2)} | {_fmt(s.get('val_acc'), 4)} / "
                         f"{_fmt(s.get('best_val_acc'), 4)} |")
    decode = predict.get("batch_decode")
    if decode:
        lines += ["", f"decode_jpeg on {decode['device']} ({decode['photos']} photos, {decode['bytes_mib']} MiB in memory): "
                  f"{decode['decode_photos_per_s']} photos/s, with the glance resize {decode['decode_glance_photos_per_s']} "
                  f"photos/s; PhotoDataset with {predict.get('workers')} workers: "
                  f"{_fmt(predict.get('decode_only', {}).get('photos_per_s'), 1)} photos/s."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- data


def cmd_pack_data(args) -> None:
    """Copy --data into numbered chunk folders to carry them to a lent GPU machine over several calls: the first
    holds at most --first-mib (room for the wheels that ride with it), the others at most --max-mib; class
    folders are kept, so `cp -r CHUNK/* DIR` of every chunk there rebuilds the ImageFolder."""
    source = Path(args.data)
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    chunks: list[list[Path]] = [[]]
    size = 0
    for path in files:
        limit = (args.first_mib if len(chunks) == 1 else args.max_mib) * 2**20
        if chunks[-1] and size + path.stat().st_size > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += path.stat().st_size
    for k, chunk in enumerate(chunks):
        folder = args.dest / f"{source.name}-{k + 1}of{len(chunks)}"
        for path in chunk:
            target = folder / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        print(f"{folder}: {len(chunk)} files, {sum(p.stat().st_size for p in chunk) / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*STEPS, "collective", "report", "pack-data"])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "gpu_check")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny synthetic data, 1 epoch: the plumbing on CPU")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ImageFolder of the photos (default: iBean train)")
    parser.add_argument("--epochs", type=int, default=None, help="every stage's epochs (default: the recipe's)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 8; 0 in a dry run)")
    parser.add_argument("--batch-size", type=int, default=64, help="predict and decode batch size")
    parser.add_argument("--gpu-decode", action="store_true", help="predict: also time torchvision decode_jpeg batches")
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu_carry", help="pack-data: where the chunks go")
    parser.add_argument("--max-mib", type=int, default=58, help="pack-data: largest chunk after the first")
    parser.add_argument("--first-mib", type=int, default=38, help="pack-data: largest first chunk (it travels with the wheels)")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    if args.workers is None:
        args.workers = 0 if args.dry_run else 8
    handlers = {"env": cmd_env, "pytest": cmd_pytest, "train": cmd_train, "evaluate": cmd_evaluate,
                "predict": cmd_predict, "torchrun": cmd_torchrun, "collective": cmd_collective,
                "report": cmd_report, "pack-data": cmd_pack_data}
    try:
        code = handlers[args.command](args)
    except Exception:  # noqa: BLE001 - the step's JSON holds it; the shell script carries on
        traceback.print_exc()
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
