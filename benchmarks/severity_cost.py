"""What severity costs (issue 25's cost target): the same model file with and without the symptom map, on the same
photos, one run, rounds interleaved so the machine's drift hits both alike.

    python -m benchmarks.severity_cost --model RUN/model.pt --photos FOLDER [--side 512] [--rounds 3]

Reports mean GMACs per photo (the cascade's, the map's) and model-time photos/s (photos decoded once beforehand;
the map's resize is inside the timed part, as in `predict`), and writes
benchmarks/results/severity/cost_<name>.json and a table between the ``severity_cost`` markers of
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.pipeline.config import PREDICT_BATCH_SIZE
from benchmarks.machine import cpu_description
from benchmarks.readme_blocks import write_block

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "severity"


def _time(predictor, items, batch: int) -> tuple[float, list]:
    """Wall seconds of the cascade over ``items`` in batches, and its predictions."""
    start, results = time.perf_counter(), []
    for i in range(0, len(items), batch):
        results.extend(predictor.run(items[i:i + batch]))
    return time.perf_counter() - start, results


def measure(model: Path, photos: list[Path], side: int, rounds: int, batch: int, precision: str = "auto") -> dict:
    """MACs and model-time photos/s of the model without and with severity, rounds interleaved."""
    import numpy as np
    import torch

    from agripatch.pipeline.cascade import SymptomReader
    from agripatch.pipeline.severity import SeverityConfig
    from agripatch.predict.predictor import Predictor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    plain = Predictor.from_file(model, device="cpu", severity=False, precision=precision)
    measured = Predictor.from_file(model, device="cpu", severity=False, precision=precision)
    reader = SymptomReader.shipped(SeverityConfig().map)
    measured.pipeline = measured.bundle.pipeline = measured.pipeline.with_severity(reader, SeverityConfig(side=side))
    items = [measured.item(p, i) for i, p in enumerate(photos)]  # decoded for the larger need, used by both
    seconds = {"without": [], "with": []}
    for _ in range(rounds):
        for name, predictor in (("without", plain), ("with", measured)):
            took, results = _time(predictor, items, batch)
            seconds[name].append(took)
    cascade_macs = float(np.mean([r.macs for r in results]))
    map_macs = float(np.mean([r.severity.macs for r in results]))
    best = {name: min(values) for name, values in seconds.items()}
    return {"model": str(model), "photos": len(photos), "side": side, "rounds": rounds, "batch": batch,
            "cpu": cpu_description(), "threads": torch.get_num_threads(), "precision": plain.precision,
            "cascade_gmacs": cascade_macs / 1e9, "map_gmacs": map_macs / 1e9,
            "added_macs_share": map_macs / cascade_macs,
            "photos_per_s": {name: len(photos) / s for name, s in best.items()},
            "speed_ratio": best["without"] / best["with"], "seconds": seconds}


def table(results: list[dict]) -> str:
    """Markdown table of stored results."""
    lines = ["| photos | map side | cascade GMACs | map GMACs (share of cascade) | photos/s without / with | time with / without |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} ({r['photos']}) | {r['side']} | {r['cascade_gmacs']:.3f} | {r['map_gmacs']:.3f} "
                     f"({100 * r['added_macs_share']:.0f}%) | {r['photos_per_s']['without']:.1f} / "
                     f"{r['photos_per_s']['with']:.1f} | {1 / r['speed_ratio']:.2f}x |")
    files = ", ".join(f"`results/severity/cost_{r['name']}_side{r['side']}.json`" for r in results)
    lines.append(f"\nStored in {files}.")
    cpu = results[-1]["cpu"] if results else {}
    lines.append(f"CPU: {cpu.get('model')} ({cpu.get('cores')} cores; {' '.join(cpu.get('flags', []))}), "
                 f"{results[-1]['threads'] if results else '?'} threads, best of the interleaved rounds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--name", required=True, help="a name for this photo set (the JSON file and the table row)")
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=PREDICT_BATCH_SIZE,
                        help="photos per call (default: what predict uses)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (sorted)")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="the networks' dtype (auto: bf16 on CPUs with AMX)")
    args = parser.parse_args(argv)
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = photos[:args.limit] if args.limit else photos
    result = {"name": args.name, **measure(args.model, photos, args.side, args.rounds, args.batch, args.precision)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"cost_{args.name}_side{args.side}.json").write_text(json.dumps(result, indent=2) + "\n")
    stored = [json.loads(p.read_text()) for p in sorted(OUT.glob("cost_*.json"))]
    print(table(stored))
    write_block(REPO / "benchmarks" / "README.md", table(stored), "severity_cost")


if __name__ == "__main__":
    main()
