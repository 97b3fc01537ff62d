"""Images/s per GMAC of every AnchorNet, before and after the CPU fixes, side by side in one run.

    python -m benchmarks.anchornet_per_mac [--threads 2] [--batch 32] [--size 224]

"before": eager modules as trained (BatchNorm separate), glibc's default allocator (large activations are
returned to the OS after every layer, so each forward pays page faults on fresh pages). "after": BatchNorm
folded into the convolutions (agripatch.models.fuse) and the allocator tuned (agripatch.device
.tune_memory_allocator), as `evaluate` and `predict` run them. Each configuration runs in its own fresh
process (the allocator setting cannot be undone), both in the same invocation. Target (issue 13): every
strictly local AnchorNet within 1.5x of anchornet_paper's img/s per GMAC. Writes
benchmarks/results/anchornet_per_mac.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]


def measure(mode: str, threads: int, batch: int, size: int) -> list[dict]:
    """(In a fresh process) img/s and GMACs of every AnchorNet in ``mode``."""
    import torch

    from agripatch.device import tune_memory_allocator
    from agripatch.models import create_anchornet, list_anchornets
    from agripatch.models.fuse import fold_batchnorm
    from agripatch.pipeline.macs import count_macs

    if mode == "after":
        tune_memory_allocator()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    rows = []
    for name in list_anchornets():
        model = create_anchornet(name, num_classes=3).eval()
        if mode == "after":
            model = fold_batchnorm(model, method="forward_cam")
        model = model.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(2):
                model.forward_cam(x)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                model.forward_cam(x)
                times.append(time.perf_counter() - start)
        gmacs = count_macs(model, (1, 3, size, size), method="forward_cam") / 1e9
        ips = batch / min(times)
        rows.append({"name": name, "mode": mode, "gmacs": gmacs, "images_per_s": ips, "per_gmac": ips / gmacs,
                     "strictly_local": bool(model.cfg["strictly_local"])})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure both configurations in fresh processes and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--mode", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "anchornet_per_mac.json")
    args = parser.parse_args(argv)
    if args.mode:  # the child
        print(json.dumps(measure(args.mode, args.threads, args.batch, args.size)))
        return
    rows = []
    for mode in ("before", "after"):
        env = {**os.environ, "AGRIPATCH_NO_MALLOC_TUNING": "1" if mode == "before" else "0"}
        done = subprocess.run([sys.executable, __file__, "--mode", mode, "--threads", str(args.threads), "--batch",
                               str(args.batch), "--size", str(args.size)], capture_output=True, text=True, env=env,
                              check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    paper = {r["mode"]: r["per_gmac"] for r in rows if r["name"] == "anchornet_paper"}
    print(f"| AnchorNet | GMACs @{args.size} | img/s before | img/s after | img/s per GMAC before | after | "
          "paper's per-GMAC / this one's, after |\n|---|---|---|---|---|---|---|")
    by_name: dict[str, dict] = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["mode"]] = r
    for name, modes in by_name.items():
        b, a = modes["before"], modes["after"]
        print(f"| {name}{'' if a['strictly_local'] else ' (SE, not strictly local)'} | {a['gmacs']:.3f} | "
              f"{b['images_per_s']:.0f} | {a['images_per_s']:.0f} | {b['per_gmac']:.0f} | {a['per_gmac']:.0f} | "
              f"{paper['after'] / a['per_gmac']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "batch": args.batch, "size": args.size, "rows": rows},
                                   indent=2))


if __name__ == "__main__":
    main()
