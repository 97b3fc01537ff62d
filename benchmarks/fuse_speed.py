"""Does fusing each convolution's activation into it (``models/fuse.fuse_activations``) pay on this CPU?

    python -m benchmarks.fuse_speed [--threads 2] [--rounds 7] [--name NAME]

``inference_model`` folds BatchNorm, fuses activations and lays weights out channels-last. This times the
networks the recipes run, at the shapes and batches ``predict`` runs them, with the fusion and without it (the
same folded, channels-last model otherwise), in interleaved rounds in one process, and prints the best time of
each with the CPU model and flags. The rule was first measured on an Intel Xeon with AVX-512 and AMX; machines
differ between sessions, so each CPU kind gets its own file: ``benchmarks/results/fuse_speed/NAME.json``
(NAME defaults to the CPU's vendor and widest vector extension). Timings only: weights are ImageNet's (or
random heads), which does not change a network's time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from benchmarks.machine import cpu_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# (label, builder name, kind, input (H, W), batch): the shapes predict runs for the shipped recipes
SHAPES = [
    ("mobilenetv2_100 full image @224 (ibean baseline)", "mobilenetv2_100", "classifier", (224, 224), 16),
    ("mobilenetv2_100 full image @448 (coffee_highres baseline)", "mobilenetv2_100", "classifier", (448, 448), 16),
    ("mobilenetv2_100 patch @128 (ibean patches)", "mobilenetv2_100", "classifier", (128, 128), 48),
    ("anchornet_mbv2_s8 glance @160 (ibean)", "anchornet_mbv2_s8", "anchornet", (160, 160), 64),
    ("anchornet_mbv2_s16 glance @160 (coffee_highres)", "anchornet_mbv2_s16", "anchornet", (160, 160), 64),
    ("symptom_map_lite0_s8 @224x112 (severity)", "symptom_map_lite0_s8", "symptom_map", (112, 224), 16),
]


def build(name: str, kind: str) -> torch.nn.Module:
    """The network with ImageNet trunk weights from the installed weight packages."""
    if kind == "classifier":
        from agripatch.models import create_classifier

        return create_classifier(name, 3, pretrained=True)[0]
    if kind == "anchornet":
        from agripatch.models import create_anchornet

        return create_anchornet(name, num_classes=3, pretrained=True)
    from agripatch.models.symptom_map import create_symptom_map

    return create_symptom_map(name, pretrained=True)


def variants(model: torch.nn.Module, probe: torch.Tensor) -> dict[str, torch.nn.Module]:
    """The folded channels-last model without and with the activation fusion."""
    from agripatch.models.fuse import fold_batchnorm, inference_model

    return {"folded": fold_batchnorm(model, probe).to(memory_format=torch.channels_last),
            "folded+fused": inference_model(model, probe)}


def best_of_rounds(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best seconds of each call (under ``inference_mode``), the calls taking turns round by round."""
    best = {name: float("inf") for name in calls}
    with torch.inference_mode():
        for call in calls.values():  # warm-up: oneDNN builds its primitives on the first call
            call()
            call()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_rounds(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Best seconds per call of each model on ``x``, the models taking turns round by round."""
    return best_of_rounds({name: (lambda model=model: model(x)) for name, model in models.items()}, rounds)


def default_name(cpu: dict) -> str:
    """A file name for this CPU kind: vendor and widest vector extension, e.g. ``intel_amx`` or ``amd_avx2``."""
    vendor = "intel" if "intel" in cpu["model"].lower() else "amd" if "amd" in cpu["model"].lower() else "cpu"
    flags = cpu["flags"]
    widest = "amx" if "amx_tile" in flags else "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{vendor}_{widest}"


def main() -> None:
    """Measure, print the table, write the JSON."""
    from agripatch.io.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--name", default=None, help="result file name (default: CPU vendor and vector extension)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = cpu_description()
    rows = []
    for label, name, kind, (h, w), batch in SHAPES:
        x = torch.rand(batch, 3, h, w).contiguous(memory_format=torch.channels_last)
        times = time_rounds(variants(build(name, kind), x[:2]), x, args.rounds)
        rows.append({"network": label, "input": [h, w], "batch": batch,
                     "ms_per_image_folded": 1000 * times["folded"] / batch,
                     "ms_per_image_fused": 1000 * times["folded+fused"] / batch,
                     "fused_over_folded": times["folded+fused"] / times["folded"]})
        print(f"{label:58s} batch {batch:3d}: {rows[-1]['ms_per_image_folded']:7.3f} -> "
              f"{rows[-1]['ms_per_image_fused']:7.3f} ms/image ({rows[-1]['fused_over_folded']:.3f}x)", flush=True)
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags']) or 'no AVX2'}), "
          f"{args.threads} threads, best of {args.rounds} interleaved rounds, torch {torch.__version__}")
    out = REPO / "benchmarks" / "results" / "fuse_speed" / f"{args.name or default_name(cpu)}.json"
    payload = {"cpu": cpu, "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "rows": rows}
    atomic_write_text(out, json.dumps(payload, indent=1))
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
