"""How many decoding worker processes should `predict folder` start on this machine's cores?

    python -m benchmarks.decode_workers --model RUN/model.pt --photos DIR [--workers 0,1,2] [--rounds 5] [--name NAME]

Runs `agripatch predict folder` as a user does (a fresh process each time, default threads: `device.share_cores`
gives torch the cores the workers leave), with and without review images (crops and overlays), for each worker
count, interleaved over ``--rounds`` rounds, and reads each run's own ``photos_per_s`` from its ``summary.json``
(the run itself, start-up excluded). Prints the median per setting with the CPU model and flags, and writes
``benchmarks/results/decode_workers/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from agripatch.io.atomic import atomic_write_text
from benchmarks.machine import cpu_description

RESULTS = Path(__file__).resolve().parent / "results" / "decode_workers"


def one_run(model: Path, photos: Path, out: Path, workers: int, review_images: bool) -> float:
    """photos/s of one `predict folder` run in its own process."""
    command = [sys.executable, "-m", "agripatch", "predict", "folder", str(photos), "--model", str(model),
               "--out", str(out), "--quiet", "--overwrite", "--workers", str(workers)]
    if not review_images:
        command += ["--no-crops", "--no-overlays"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return float(json.loads((out / "summary.json").read_text())["photos_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="decode_workers")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for workers in counts:
                for review in (False, True):
                    key = f"workers={workers} {'with' if review else 'without'} review images"
                    rates.setdefault(key, []).append(one_run(args.model, args.photos, Path(tmp) / "out", workers, review))
    cpu = cpu_description()
    photos = sum(1 for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    result = {"model": str(args.model), "photos_dir": str(args.photos), "photos": photos, "rounds": args.rounds,
              "cpu": cpu, "photos_per_s": rates,
              "median_photos_per_s": {k: float(np.median(v)) for k, v in rates.items()}}
    print(f"{photos} photos, {args.rounds} interleaved rounds; CPU: {cpu['model']}, {cpu['cores']} cores, "
          f"{' '.join(cpu['flags'])}")
    print("| setting | photos/s, median | each round |\n|---|---|---|")
    for key, values in rates.items():
        print(f"| {key} | {np.median(values):.1f} | {' / '.join(f'{v:.1f}' for v in values)} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
