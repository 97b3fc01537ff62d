"""`agripatch demo`: the whole product on synthetic leaves, offline, in a few minutes on a laptop CPU.

Synthesise a small leaf-disease set, split it, train the `smoke` recipe from the offline ImageNet
weights, evaluate it (report, confusion matrix, budget plot), then run `predict folder` on unseen
synthetic photos (plus a folder of your own photos, ``extra_photos``, when given).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def run_demo(out: str | Path = "agripatch-demo", *, per_class: int = 24, size: int = 256,
             extra_photos: str | Path | None = None) -> Path:
    """Run synth -> split -> train -> evaluate -> predict under OUT; returns the review page's path.

    ``extra_photos``: a folder of your own photos to diagnose beside the synthetic ones.
    """
    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import make_splits, write_splits_csv
    from agripatch.data.synth import generate_synthetic
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.engine.train import run_training
    from agripatch.predict.folder import PredictOptions, run_predict_folder

    out = Path(out)
    start = time.perf_counter()
    data, run, inbox = out / "data", out / "run", out / "inbox"
    console.rule("[bold]1/4 synthesise leaves")
    if not (data / "splits.csv").is_file():
        generate_synthetic(data, classes=3, per_class=per_class, size=size, seed=0)
        write_splits_csv(make_splits(scan_image_folder(data), val=0.2, test=0.2, seed=0), data / "splits.csv")
    console.print(f"dataset: {data}")

    console.rule("[bold]2/4 train the smoke recipe")
    model = run / "model.pt"
    if not model.is_file():
        run_training("smoke", data, run, device="cpu", resume=(run / "recipe.yaml").is_file())
    console.rule("[bold]3/4 evaluate on the held-out test split")
    summary = run_evaluation(EvaluateOptions(model=model, data=data, out=out / "eval", split="test", device="cpu"))

    console.rule("[bold]4/4 predict a folder of new photos")
    if not inbox.is_dir():
        generate_synthetic(inbox / "synthetic", classes=3, per_class=3, size=size, seed=1)
        if extra_photos is not None:
            shutil.copytree(Path(extra_photos), inbox / Path(extra_photos).name)
    run_predict_folder(PredictOptions(input=inbox, model=model, out=out / "review", recursive=True, batch_size=8,
                                      workers=0, device="cpu", overwrite=True))
    page = out / "review" / "index.html"
    elapsed = time.perf_counter() - start
    console.print(
        f"[green]demo done in {elapsed:.0f} s[/green]: test top-1 {summary['top1']:.3f} "
        f"(chance {1 / len(summary['classes']):.3f}) at {summary['mean_gmacs']:.3f} GMACs/img; "
        f"review page: [bold]{page}[/bold]"
    )
    return page
