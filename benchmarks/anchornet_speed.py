"""MACs and CPU images/s of every AnchorNet, of patch selection alone, and of the cascade at K = 1..4.

    python -m benchmarks.anchornet_speed [--threads 2] [--batch 32] [--size 224]

Beside them, the full-image tf_efficientnet_lite0 at the same size. Targets (issue 3): patch selection
<= 5% of the cascade's time; every strictly local AnchorNet at 224 <= 0.15 GMACs. Prints a table and
writes benchmarks/results/anchornet_speed.json. Timings are side by side in one process, eval mode,
channels_last, no early exit (every image reads all K patches): compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def best_time(fn, repeats: int = 3) -> float:
    """Fastest of a few runs after one warm-up (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Measure and report."""
    from agripatch.models import create_anchornet, create_classifier, list_anchornets
    from agripatch.pipeline.cascade import PatchPipeline
    from agripatch.pipeline.config import CascadeConfig
    from agripatch.pipeline.macs import count_macs
    from agripatch.pipeline.select import cell_scores, select_cells

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "anchornet_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, batch = args.size, args.batch
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    rows = []

    with torch.inference_mode():
        for name in list_anchornets():
            model = create_anchornet(name, num_classes=3, pretrained=False).eval().to(memory_format=torch.channels_last)
            seconds = best_time(lambda: model.forward_cam(x))
            rows.append({"what": f"{name} @{size}", "gmacs": count_macs(model, (1, 3, size, size)) / 1e9,
                         "images_per_s": batch / seconds, "strictly_local": bool(model.cfg["strictly_local"])})
        lite0, _ = create_classifier("tf_efficientnet_lite0", 3, pretrained=False)
        lite0 = lite0.eval().to(memory_format=torch.channels_last)
        seconds = best_time(lambda: lite0(x))
        rows.append({"what": f"tf_efficientnet_lite0 full image @{size}", "gmacs": count_macs(lite0, (1, 3, size, size)) / 1e9,
                     "images_per_s": batch / seconds})

        anchornet = create_anchornet("anchornet_lite0_s8", num_classes=3, pretrained=False).eval()
        classifier, _ = create_classifier("mobilenetv2_100", 3, pretrained=False)
        classifier = classifier.eval().to(memory_format=torch.channels_last)
        photos = [torch.randint(0, 256, (3, 500, 500), dtype=torch.uint8) for _ in range(batch)]
        logits, cam = anchornet.forward_cam(x)
        boxes = anchornet.cell_boxes(size, size)
        select_seconds = best_time(lambda: select_cells(cell_scores(cam, logits), boxes, 4, 0.25))
        for k in (1, 2, 3, 4):
            config = CascadeConfig(k=k, glance_size=size, patch_size=args.patch, thresholds=[2.0] * k + [0.0])
            pipeline = PatchPipeline(anchornet, classifier, config)
            seconds = best_time(lambda: pipeline.predict(photos), repeats=2)
            rows.append({"what": f"cascade anchornet_lite0_s8 + mobilenetv2_100@{args.patch}, K={k}",
                         "gmacs": float(pipeline.exit_macs()[-1]) / 1e9, "images_per_s": batch / seconds,
                         "selection_share": select_seconds / seconds})

    print(f"{'what':62s} {'GMACs':>7s} {'img/s':>8s}  note")
    for row in rows:
        note = ""
        if "selection_share" in row:
            note = f"selection {100 * row['selection_share']:.2f}% of cascade time"
        elif row.get("strictly_local") is not None:
            note = ("strictly local" if row["strictly_local"] else "not strictly local (SE)") + (
                "" if row["gmacs"] <= 0.15 else "  ABOVE 0.15 GMACs")
        print(f"{row['what']:62s} {row['gmacs']:7.3f} {row['images_per_s']:8.1f}  {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "batch": batch, "size": size,
                                    "selection_seconds_per_batch": select_seconds, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
