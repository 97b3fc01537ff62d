"""What judging leafy far photos on their turned glances costs in seconds: the same model file with and without
``refusal.view_turns``, side by side in one process, on the same decoded photos. With ``--exposure``, what the
re-exposed glance adds: the file with its turns against the file with its turns and ``refusal.view_exposure`` metered
on ``--data``'s training photos.

    python -m benchmarks.refusal_views_speed --model RUN/model.pt --data ROOT [--split test] [--sets "as taken,quarter turn"]
    python -m benchmarks.refusal_views_speed --model RUN/model.pt --data ROOT --exposure --sets "as taken (re-saved),exposure +1 stop"

Each set's photos are decoded once (as `predict` decodes them); then ``--repeats`` interleaved rounds run
`Predictor.run` + `record` over them in batches of `predict`'s size for each model; each time is the best round's.
The sets are `capture_shift.py`'s (made again from ``--split`` of ``--data``). Prints a table and writes
``benchmarks/results/profile/refusal_views_speed_NAME.json`` with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.io.atomic import atomic_write_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "profile"


def cpu() -> dict:
    """The CPU model and the flags that matter for these kernels."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model": model, "cores": os.cpu_count(),
            "flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))}


def seconds(predictor, items, batch: int) -> float:
    """Wall seconds of `run` and `record` over the items."""
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        for item, result in zip(chunk, predictor.run(chunk)):
            predictor.record(item, result)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Time both models on every set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--sets", default="as taken (re-saved),quarter turn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None)
    parser.add_argument("--exposure", action="store_true",
                        help="compare turns alone with turns and the re-exposed glance")
    args = parser.parse_args(argv)

    import torch

    from agripatch.data.splits import read_splits_csv
    from agripatch.pipeline.config import PREDICT_BATCH_SIZE
    from agripatch.predict.predictor import Predictor
    from benchmarks.capture_shift import SHIFTS, shifted_files, with_orientation

    torch.set_num_threads(2)
    if args.exposure:
        without, with_ = "turns alone", "turns and exposure"
        models = {without: Predictor.from_file(with_orientation(args.model, None, True), device="cpu"),
                  with_: Predictor.from_file(with_orientation(args.model, None, True, args.data), device="cpu")}
        models[without].refusal.view_exposure = 0.0
    else:
        without, with_ = "without view turns", "with view turns"
        models = {without: Predictor.from_file(args.model, device="cpu"),
                  with_: Predictor.from_file(with_orientation(args.model, None, True), device="cpu")}
        models[without].refusal.view_turns = ()
        for predictor in models.values():  # turns alone, whatever the file meters
            predictor.refusal.view_exposure = 0.0
    rows = [row for row in read_splits_csv(args.data / "splits.csv") if row.split == args.split]
    paths = [args.data / row.path for row in rows]
    result = {"model": str(args.model), "cpu": cpu(), "torch_threads": torch.get_num_threads(),
              "precision": models[with_].precision, "compared": [without, with_], "sets": {}}
    print(f"CPU {result['cpu']['model']}, {result['cpu']['cores']} cores, flags {' '.join(result['cpu']['flags'])}")
    print(f"| set | photos | judged on views | ms a photo, {without} | {with_} | ratio |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.sets.split(",")):
            change, quality = SHIFTS[name]
            files = shifted_files(paths, Path(tmp) / str(i), change, quality)
            items = [models[with_].item(f, j) for j, f in enumerate(files)]
            best = {key: float("inf") for key in models}
            for _ in range(args.repeats):
                for key, predictor in models.items():
                    best[key] = min(best[key], seconds(predictor, items, PREDICT_BATCH_SIZE))
            judged = sum(1 for r in models[with_].run(items) if r.refusal_macs)
            entry = {"photos": len(items), "judged_on_views": judged,
                     **{f"ms_per_photo {key}": 1000 * value / len(items) for key, value in best.items()},
                     "ratio": best[with_] / best[without]}
            result["sets"][name] = entry
            print(f"| {name} | {len(items)} | {judged} | {entry[f'ms_per_photo {without}']:.2f} | "
                  f"{entry[f'ms_per_photo {with_}']:.2f} | {entry['ratio']:.3f} |", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"refusal_views_speed_{args.name or args.model.parent.name}.json",
                      json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
