"""Does the full-image exit read a photo as its network was trained to? (issue 24, "never worse than the whole photo")

    python -m benchmarks.full_image_input --model RUN/model.pt --data ROOT [--splits val,test] [--name NAME]
    python -m benchmarks.full_image_input --pool NAME,NAME,... --name POOLED   # runs' test photos joined

The full-image exit's network is the run's baseline, trained and evaluated on each photo decoded reduced for its
input size (JPEG DCT scaling) and then shrunk with the area filter (`io/glance.read_glance`). The cascade decodes
photos larger than that, for its patches. Before this script's change the exit shrank that larger decode instead.
This reads every photo of the splits both ways, as `predict` decodes it, and runs the network on both:

- ``file``: :func:`agripatch.io.glance.whole_photo` with the photo's file, what the exit reads now;
- ``decode``: the same function on the cascade's decode alone, what the exit read before.

Paired over the same photos: top-1, mean negative log-likelihood, and the wall time to make each input (one
process, after a warm-up; CPU printed). Writes ``benchmarks/results/full_image_input/NAME.json``. ``--pool`` joins
stored runs' test photos (each run its own split and seed) into one paired comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from agripatch.data.splits import load_splits, samples_for
from agripatch.engine.stats import paired_comparison
from agripatch.io.atomic import atomic_write_text
from agripatch.io.glance import PhotoFile, whole_photo
from agripatch.pipeline.inputs import normalize
from agripatch.predict.predictor import Predictor
from benchmarks.machine import cpu_description
from benchmarks.paired_evaluations import compare, describe

RESULTS = Path(__file__).resolve().parent / "results" / "full_image_input"


def read_both(predictor: Predictor, files: list[Path], size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Both inputs [N, 3, S, S] of every file, decoded as `predict` decodes it, and ms a photo to make each."""
    made = {"file": [], "decode": []}
    seconds = {"file": 0.0, "decode": 0.0}
    for i, path in enumerate(files):
        item = predictor.item(path, i)
        hwc = item["image"].permute(1, 2, 0).numpy()
        for name, file in (("file", PhotoFile(str(path), tuple(item["original_hw"]))), ("decode", None)):
            start = time.perf_counter()
            made[name].append(whole_photo(hwc, size, file))
            seconds[name] += time.perf_counter() - start
    return (np.stack(made["file"]), np.stack(made["decode"]),
            {f"ms_per_photo_{k}": 1e3 * v / len(files) for k, v in seconds.items()})


@torch.no_grad()
def log_probs(network: torch.nn.Module, inputs: np.ndarray, mean, std, batch: int = 32) -> np.ndarray:
    """The network's log-probabilities [N, C] for 0..1 inputs."""
    parts = [torch.log_softmax(network(normalize(torch.from_numpy(inputs[i:i + batch]), mean, std)), dim=1)
             for i in range(0, len(inputs), batch)]
    return torch.cat(parts).numpy()


def pool(names: list[str], split: str = "test") -> dict:
    """One paired comparison over stored runs' ``split`` photos: [runs, photos] when every run read the same photos
    (seeds of one split: each photo's difference averaged over runs), else the runs' photos joined."""
    runs = [json.loads((RESULTS / f"{name}.json").read_text())["splits"][split] for name in names]
    same = all(r["paths"] == runs[0]["paths"] for r in runs)
    join = np.stack if same else np.concatenate
    right_file = join([np.asarray(r["right_file"], bool) for r in runs])
    right_decode = join([np.asarray(r["right_decode"], bool) for r in runs])
    paired = paired_comparison(right_file, right_decode)
    return {"runs": names, "split": split, "same_photos": same, "photos": int(right_file.shape[-1]),
            "photo_runs": int(right_file.size), "top1_file": float(right_file.mean()),
            "top1_decode": float(right_decode.mean()), "file_minus_decode": paired.difference,
            "ci": [paired.ci_low, paired.ci_high], "gained": int((right_file & ~right_decode).sum()),
            "lost": int((~right_file & right_decode).sum()),
            "nll_file": float(np.mean([r["nll_file"] for r in runs])),
            "nll_decode": float(np.mean([r["nll_decode"] for r in runs]))}


def main(argv: list[str] | None = None) -> None:
    """Score the full-image network on both inputs; print and store the paired comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model file with a full-image exit")
    parser.add_argument("--data", type=Path, help="dataset root with splits.csv")
    parser.add_argument("--pool", default=None, help="comma-separated stored names: join their test photos")
    parser.add_argument("--cascade-now", default=None, help="with --pool: comma-separated `agripatch evaluate` "
                        "folders of the version now (benchmarks/paired_evaluations.py pairs them)")
    parser.add_argument("--cascade-before", default=None, help="with --pool: the same runs' folders, before")
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--name", default=None, help="JSON name (default: the run folder's name)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.pool:
        pooled = pool(args.pool.split(","))
        print(f"{pooled['photos']} test photos x {len(pooled['runs'])} runs: top-1 from the file "
              f"{pooled['top1_file']:.4f} against the decode {pooled['top1_decode']:.4f} ({pooled['file_minus_decode']:+.4f} "
              f"[{pooled['ci'][0]:+.4f}, {pooled['ci'][1]:+.4f}], {pooled['gained']} gained / {pooled['lost']} lost)")
        if args.cascade_now and args.cascade_before:
            pooled["cascade"] = compare([Path(d) for d in args.cascade_now.split(",")],
                                        [Path(d) for d in args.cascade_before.split(",")], "now", "before")
            print("the default cascade, " + describe(pooled["cascade"]))
        atomic_write_text(RESULTS / f"{args.name or 'pooled'}.json", json.dumps(pooled, indent=1) + "\n")
        return
    if args.model is None or args.data is None:
        parser.error("--model and --data are needed (or --pool)")
    torch.set_num_threads(args.threads)

    predictor = Predictor.from_file(args.model, device="cpu")
    spec = predictor.pipeline.full_image_spec
    if spec is None:
        raise SystemExit(f"{args.model} has no full-image exit")
    rows = load_splits(args.data)
    out = {"model": str(args.model), "size": spec.size, "decode_min_side": predictor.decode_min_side(),
           "cpu": cpu_description(), "threads": args.threads, "splits": {}}
    read_both(predictor, [args.data / samples_for(rows, "val", predictor.classes)[0][0]], spec.size)  # warm-up
    for split in args.splits.split(","):
        samples = samples_for(rows, split, predictor.classes)
        files = [args.data / path for path, _ in samples]
        labels = np.array([label for _, label in samples])
        by_file, by_decode, timing = read_both(predictor, files, spec.size)
        lp_file = log_probs(spec.network, by_file, spec.mean, spec.std)
        lp_decode = log_probs(spec.network, by_decode, spec.mean, spec.std)
        right_file, right_decode = lp_file.argmax(1) == labels, lp_decode.argmax(1) == labels
        paired = paired_comparison(right_file, right_decode)
        out["splits"][split] = {
            "photos": len(files), "top1_file": float(right_file.mean()), "top1_decode": float(right_decode.mean()),
            "file_minus_decode": paired.difference, "ci": [paired.ci_low, paired.ci_high],
            "gained": int((right_file & ~right_decode).sum()), "lost": int((~right_file & right_decode).sum()),
            "labels_differ": int((lp_file.argmax(1) != lp_decode.argmax(1)).sum()),
            "nll_file": float(-lp_file[np.arange(len(labels)), labels].mean()),
            "nll_decode": float(-lp_decode[np.arange(len(labels)), labels].mean()),
            "mean_abs_pixel_difference": float(np.abs(by_file - by_decode).mean()), **timing,
            "paths": [path for path, _ in samples],
            "right_file": right_file.astype(int).tolist(), "right_decode": right_decode.astype(int).tolist()}
        r = out["splits"][split]
        print(f"{split}: {r['photos']} photos, top-1 from the file {r['top1_file']:.4f} against the decode "
              f"{r['top1_decode']:.4f} ({r['file_minus_decode']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}], "
              f"{r['gained']} gained / {r['lost']} lost), NLL {r['nll_file']:.4f} against {r['nll_decode']:.4f}, "
              f"{r['ms_per_photo_file']:.2f} against {r['ms_per_photo_decode']:.2f} ms a photo to make")
    print(f"CPU: {out['cpu']['model']}, {out['cpu']['cores']} cores, {' '.join(out['cpu']['flags'])}")
    name = args.name or args.model.parent.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
