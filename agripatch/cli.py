"""The `agripatch` command line: thin Typer wrappers that parse arguments and call the package.

Every command prints with rich; any `AgripatchError` becomes a one-line red message and exit status 1
(no traceback), because those are user-fixable problems (bad path, bad recipe, unreadable file).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agripatch.errors import AgripatchError  # noqa: E402
from agripatch.pipeline.config import PREDICT_BATCH_SIZE  # noqa: E402

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="agripatch",
    help="Crop disease recognition with AnchorNet semantic patches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="List, check, split, prepare and synthesise leaf-image datasets.", no_args_is_help=True)
recipes_app = typer.Typer(help="List and show training recipes.", no_args_is_help=True)
predict_app = typer.Typer(help="Predict on photos with a trained model.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(recipes_app, name="recipes")
app.add_typer(predict_app, name="predict")
review_app = typer.Typer(help="Review a folder's diagnoses as a team: the review page served with a database.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


def _model_for_backend(model: Path, backend: str, int8: bool) -> Path:
    """With ``--backend onnxruntime`` a model file runs through its fp32 export, made once beside it
    (:func:`~agripatch.export.build.export_beside`); an export folder, or the torch backend, is used as given."""
    if backend != "onnxruntime" or not Path(model).expanduser().is_file():
        return model
    if int8:
        raise AgripatchError("--int8 runs an export folder's int8 graphs: make them with `agripatch export MODEL "
                             "--format onnx --int8 --calibration PHOTOS --out DIR` and pass DIR")
    from agripatch.export.build import export_beside

    return export_beside(model, log=lambda message: typer.echo(message, err=True))


def _threshold_list(text: Optional[str]) -> Optional[list[float]]:
    """Parse `--thresholds`: comma-separated numbers, one for every stage or one per stage."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AgripatchError(f"--thresholds {text!r}: give comma-separated numbers, e.g. 0.9,0.9,0") from None


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


# ----------------------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list() -> None:
    """Show the dataset cards shipped in `datasets/`."""
    from agripatch.data.cards import list_cards

    table = Table(title="dataset cards")
    for column in ("name", "title", "classes", "licence", "official splits"):
        table.add_column(column)
    for card in list_cards():
        splits = ", ".join(f"{raw}->{ours}" for raw, ours in card.official_splits.items()) or "none"
        table.add_row(card.name, card.title, str(card.num_classes), card.licence.split(":")[0].split("(")[0].strip(), splits)
    console.print(table)


@datasets_app.command("check")
def datasets_check(
    root: Path = typer.Argument(..., help="ImageFolder root (root/<class>/*), a train/val/test layout, or a root with splits.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Count images per class and split; flag unreadable files, empty classes, duplicates and leakage. Exit 1 on any problem."""
    from agripatch.data.checks import check_dataset, render_report

    with _progress() as progress:
        task = progress.add_task("checking images", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = check_dataset(root, progress=update)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_report(report, console)
    raise typer.Exit(code=0 if report.ok else 1)


@datasets_app.command("split")
def datasets_split(
    root: Path = typer.Argument(..., help="ImageFolder root (root/<class>/*)."),
    val: float = typer.Option(0.1, help="Validation fraction per class."),
    test: float = typer.Option(0.1, help="Test fraction per class."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same split."),
    folds: int = typer.Option(0, help="Cross-validation: deal each class into this many folds (0: no folds)."),
    fold: int = typer.Option(0, help="With --folds: which fold is the test split (0-based); --test is then unused."),
) -> None:
    """Write ROOT/splits.csv: a stratified, reproducible train/val/test split (an existing train/val/test layout is kept as is).

    With --folds K --fold F the test split is fold F of a stratified K-fold cross-validation (the same seed
    gives the same folds), so K runs, one per fold, test every image once."""
    from collections import Counter

    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import find_split_layout, make_fold_splits, make_splits, write_splits_csv

    rows = find_split_layout(root)
    if rows is not None:
        if folds:
            raise AgripatchError(f"{root} already has a train/val/test layout, so it cannot be cross-validated: "
                                 f"point `datasets split --folds` at a folder of class folders")
        console.print(f"{root} already has a train/val/test layout; writing it to splits.csv as is.")
    elif folds:
        rows = make_fold_splits(scan_image_folder(root), folds=folds, fold=fold, val=val, seed=seed)
    else:
        rows = make_splits(scan_image_folder(root), val=val, test=test, seed=seed)
    path = write_splits_csv(rows, Path(root) / "splits.csv") or Path(root) / "splits.csv"
    counts = Counter(row.split for row in rows)
    console.print(f"wrote {path}: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("train", "val", "test")))


@datasets_app.command("prepare")
def datasets_prepare(
    name: str = typer.Argument(..., help="Dataset card name (see `agripatch datasets list`)."),
    src: Path = typer.Option(..., "--src", help="The dataset as published (raw layout, see its card)."),
    out: Path = typer.Option(..., "--out", help="Where to write the ImageFolder + splits.csv."),
    mode: str = typer.Option("hardlink", help="hardlink (default, falls back to copy), symlink or copy."),
    seed: int = typer.Option(0, help="Seed for splits the dataset does not define itself."),
    val: float = typer.Option(0.1, help="Validation fraction where there is no official split."),
    test: float = typer.Option(0.1, help="Test fraction where there is no official split."),
) -> None:
    """Convert a published dataset layout into ImageFolder + splits.csv (official splits kept)."""
    from agripatch.data.prepare import prepare_dataset

    with _progress() as progress:
        task = progress.add_task(f"preparing {name}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = prepare_dataset(name, src, out, mode=mode, seed=seed, val=val, test=test, progress=update)
    console.print(f"[green]prepared[/green] {name} into {out}: {result}")


@datasets_app.command("synth")
def datasets_synth(
    out: Path = typer.Argument(..., help="Output folder (ImageFolder + boxes.csv)."),
    classes: int = typer.Option(3, help="Number of classes (2-6): healthy, leaf_spot, rust, blight, ..."),
    per_class: int = typer.Option(40, help="Images per class."),
    size: int = typer.Option(384, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical images."),
    distractors: bool = typer.Option(False, "--distractors", help="Add a colour card and a hand to every scene."),
    field: bool = typer.Option(False, "--field", help="A smaller leaf anywhere in the frame, smaller lesions: the "
                               "photo's centre is often not the leaf (as in photos taken where the plant grows)."),
) -> None:
    """Generate synthetic leaf-disease photos whose class is visible only in small lesions (boxes.csv gives them)."""
    from agripatch.data.synth import generate_synthetic

    with _progress() as progress:
        task = progress.add_task("synthesising leaves", total=classes * per_class)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = generate_synthetic(out, classes=classes, per_class=per_class, size=size, seed=seed,
                                    distractors=distractors, layout="field" if field else "centred",
                                    progress=update)
    console.print(f"[green]wrote[/green] {result.num_images} images of {len(result.classes)} classes to {out}")


@datasets_app.command("add-reviewed")
def datasets_add_reviewed(
    corrections: Optional[Path] = typer.Argument(None, help="corrections.csv downloaded from a review page (index.html of predict folder); or use --db."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="The photo folder that `predict folder` read (the CSV's paths are relative to it); with --db, the one recorded by default."),
    to: Path = typer.Option(..., "--to", help="ImageFolder dataset root (ROOT/<class>/*) to add the reviewed photos to."),
    db: Optional[str] = typer.Option(None, "--db", help="Read the decisions of `agripatch review serve` from its database (a SQLite file such as OUT/review.sqlite3, or a SQLAlchemy URL) instead of a CSV."),
    output: Optional[Path] = typer.Option(None, "--output", help="With --db holding several outputs: the OUT folder whose decisions to add."),
    partial: bool = typer.Option(False, "--partial", help="Add the good rows even when some rows are refused."),
    model: Optional[Path] = typer.Option(None, "--model", help="RUN/model.pt: its classes count as known classes."),
    not_a_leaf_to: Optional[Path] = typer.Option(None, "--not-a-leaf-to", help="Also copy the photos marked not a leaf here (outside --to)."),
) -> None:
    """Copy reviewed photos into a dataset under their confirmed class (never moved; duplicates skipped; splits.csv gets them as train). Exit 1 when rows were refused."""

    from agripatch.data.corrections import CorrectionsError
    from agripatch.data.reviewed import add_reviewed, add_reviewed_from_db

    if (corrections is None) == (db is None):
        raise typer.BadParameter("give either a corrections.csv or --db (the review server's database), not both")
    if corrections is not None and photos is None:
        raise typer.BadParameter("--photos is required with a corrections.csv: the folder `predict folder` read")
    classes = None
    if model is not None:
        from agripatch.pipeline.bundle import load_model_file

        classes = load_model_file(model).classes
    try:
        if db is not None:
            result = add_reviewed_from_db(db, to, output=output, photos_dir=photos, partial=partial, classes=classes,
                                          not_a_leaf_dir=not_a_leaf_to)
        else:
            assert corrections is not None and photos is not None
            result = add_reviewed(corrections, photos, to, partial=partial, classes=classes,
                                  not_a_leaf_dir=not_a_leaf_to)
    except CorrectionsError as error:
        err_console.print(f"[bold red]refused {len(error.errors)} row(s); nothing was copied[/bold red] "
                          "(fix them, or pass --partial to add the good rows only):", highlight=False)
        for row_error in error.errors:
            err_console.print(f"  {row_error}", markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    _report_reviewed(result, to, not_a_leaf_to)


def _report_reviewed(result, to: Path, not_a_leaf_to: Optional[Path]) -> None:
    """What add-reviewed did: photos added per class, duplicates (and those reviewed as another class), not-a-leaf
    photos, splits.csv rows, photos left out for disagreement; exit 1 when rows were refused."""
    from rich.markup import escape

    table = Table(title=escape(f"added to {to}"))
    table.add_column("class")
    table.add_column("added", justify="right")
    for name, count in result.added_per_class().items():
        table.add_row(escape(name), str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{len(result.added)}[/bold]")
    console.print(table)
    conflicts = [dup for dup in result.duplicates if dup.other_class]
    console.print(f"duplicates skipped (same bytes already in the dataset): {len(result.duplicates)}", highlight=False)
    for dup in conflicts:
        console.print("  [yellow]check:[/yellow] " + escape(f"{dup.source!r} is already there as {dup.existing!r}, "
                                                           f"but was reviewed as {dup.label!r}"), highlight=False)
    copied = f", copied to {not_a_leaf_to}" if not_a_leaf_to is not None else " (not added to any class)"
    console.print(f"not a leaf: {result.not_a_leaf}{copied}", markup=False, highlight=False)
    if result.splits_csv is not None:
        console.print(f"{result.splits_csv}: {result.splits_added} row(s) added as split train", markup=False,
                      highlight=False)
    if result.left_out:
        console.print(f"left out: {len(result.left_out)} photo(s) where reviewers disagree; settle them on the review "
                      "page (\"reviewers disagree\" filter) and run this again", markup=False, highlight=False)
    if result.errors:
        err_console.print(f"[bold red]refused {len(result.errors)} row(s):[/bold red]", highlight=False)
        for row_error in result.errors:
            err_console.print(f"  {row_error}", markup=False, highlight=False)
        raise typer.Exit(code=1)


# ------------------------------------------------------------------------------------------- review
@review_app.command("serve")
def review_serve(
    outs: list[Path] = typer.Argument(..., help="Output folders of `agripatch predict folder` (OUT) to review."),
    db: Optional[str] = typer.Option(None, "--db", help="Where decisions are kept: a SQLite file or a SQLAlchemy URL "
                                     "(postgresql://user@host/db). Default: FIRST_OUT/review.sqlite3."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback requires an access "
                             "token on every request (printed at start)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0 picks a free one)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="AGRIPATCH_REVIEW_TOKEN",
                                        help="Access token to require (default: none on loopback, a new random one otherwise)."),
) -> None:
    """Serve the review page of OUT folders to a team: every decision (who, what, when, note) is kept in a database."""
    from rich.markup import escape

    from agripatch.predict.review_server import open_review

    server = open_review(outs, db=db, host=host, port=port, token=token)
    console.print(f"[bold]review server[/bold] for {len(outs)} output(s), decisions in {escape(server.store.url)}")
    console.print(f"open [link]{escape(server.login_url)}[/link]", highlight=False)
    if server.team_url:
        console.print(f"from other machines: [link]{escape(server.team_url)}[/link]", highlight=False)
    if server.token:
        console.print(f"access token: {escape(server.token)} (every request needs it; share it only with reviewers)",
                      highlight=False)
    console.print("stop with Ctrl+C; every decision the page shows as saved is already in the database", highlight=False)
    server.run()


# ------------------------------------------------------------------------------------------ recipes
@recipes_app.command("list")
def recipes_list() -> None:
    """List the shipped training recipes."""
    from agripatch.recipes import list_recipes, load_recipe

    table = Table(title="recipes")
    table.add_column("name")
    table.add_column("anchornet")
    table.add_column("classifier")
    table.add_column("description")
    for name in list_recipes():
        recipe = load_recipe(name)
        table.add_row(name, recipe.models.anchornet.arch, recipe.models.classifier.arch, recipe.description)
    console.print(table)


@recipes_app.command("show")
def recipes_show(
    name: str = typer.Argument(..., help="Recipe name or path to a .yaml file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. stages.anchornet.epochs=2"),
) -> None:
    """Print the resolved recipe (every default spelled out) as YAML."""
    from agripatch.recipes import load_recipe

    print(load_recipe(name, overrides or []).to_yaml(), end="")


# ------------------------------------------------------------------------------ train / eval / etc.
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    recipe: str = typer.Option(..., "--recipe", help="Recipe name (see `agripatch recipes list`) or .yaml path."),
    data: Path = typer.Option(..., "--data", help="Dataset root (ImageFolder with splits.csv or train/val/test)."),
    out: Path = typer.Option(..., "--out", help="Run folder for checkpoints, metrics and the final model."),
    epochs: Optional[int] = typer.Option(None, help="Override every stage's epochs."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    seed: Optional[int] = typer.Option(None, help="Override the recipe's seed."),
    lesion_masks: Optional[Path] = typer.Option(
        None, "--lesion-masks", help="Folder of lesion masks (<class>/<name>.png or <name>.png) that teach AnchorNet "
        "where the disease is; pixels >= the recipe's lesions.min_value are lesion."),
    teacher: Optional[Path] = typer.Option(
        None, "--teacher", help="Another run's model.pt whose full-image baseline (e.g. 512 px) the AnchorNet and "
        "patch stages learn from (recipe distill: weight, temperature, stages)."),
) -> None:
    """Fine-tune AnchorNet, the patch classifier and the full-image baseline (extra args: key=value recipe overrides)."""
    from agripatch.engine.train import run_training

    run_training(recipe=recipe, data=data, out=out, epochs=epochs, device=device, resume=resume, seed=seed,
                 overrides=list(ctx.args), lesion_masks=lesion_masks, teacher=teacher)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="A model file written by `agripatch train` (RUN/model.pt), or an "
                                           "export folder with --backend onnxruntime."),
    data: Path = typer.Option(..., "--data", help="Dataset root with splits.csv or train/val/test."),
    out: Path = typer.Option(..., "--out", help="Folder for the report, confusion matrix and budget sweep."),
    split: str = typer.Option("test", help="Which split to evaluate."),
    budget: Optional[float] = typer.Option(None, help="Mean GMACs per image to spend; sets the exit thresholds."),
    thresholds: Optional[str] = typer.Option(None, help="Comma-separated exit thresholds, one per stage."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    backend: str = typer.Option("torch", help="torch or onnxruntime (an `agripatch export` folder, or a model file "
                                              "exported once beside itself)."),
    int8: bool = typer.Option(False, "--int8", help="With --backend onnxruntime: the int8 graphs."),
    severity: Optional[bool] = typer.Option(None, "--severity/--no-severity", help="Measure severity (the package's "
                                            "symptom map when the model holds none) and score it against "
                                            "DATA/severity.csv when present; default: as the model file says."),
    precision: str = typer.Option("auto", "--precision", help="The PyTorch networks' dtype: auto (bf16 on CPUs with "
                                  "AMX units, measured faster there; else float32), float32 or bfloat16."),
) -> None:
    """Per-class report, confusion matrix, MACs and the accuracy-versus-compute sweep on one split."""
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation

    model = _model_for_backend(model, backend, int8)
    run_evaluation(EvaluateOptions(model=model, data=data, out=out, split=split, budget=budget,
                                   thresholds=_threshold_list(thresholds), device=device, backend=backend, int8=int8,
                                   severity=severity, precision=precision))


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="A model file written by `agripatch train` (RUN/model.pt)."),
    data: Path = typer.Option(..., "--data", help="Dataset root with splits.csv or train/val/test."),
    split: str = typer.Option("val", help="The photos to fit on (never the ones you will test on)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the model file (default: in place)."),
    target_confidence: Optional[float] = typer.Option(None, "--target-confidence",
                                                      help="Stop at this calibrated confidence (default: the recipe's, lowered where it would "
                                                           "spend more than the full-image exit's model)."),
    budget: Optional[float] = typer.Option(None, help="Or: mean GMACs per image to spend."),
    full_image_exit: Optional[bool] = typer.Option(None, "--full-image-exit/--no-full-image-exit",
                                                   help="Add (or drop) a last exit where the file's full-image "
                                                        "baseline reads the photos the patches leave unsure."),
    symptom_prior: bool = typer.Option(False, "--symptom-prior", help="Rank the cells by the symptom map (the "
                                       "package's, stored in the file, when it holds none; severity is then measured "
                                       "too): patches on lesions of any crop, at the map's cost."),
    map_side: Optional[int] = typer.Option(None, "--map-side", min=8, help="With --symptom-prior: the photo's long "
                                           "side as the map reads it (default 224; 128 costs 0.068 GMACs a square "
                                           "photo against 0.164, but misses small lesions)."),
) -> None:
    """Refit a model's confidence temperatures, exit thresholds and refusal thresholds with this version's rules,
    without retraining (the networks are kept)."""
    from agripatch.engine.calibrate import run_calibration
    from agripatch.pipeline.exits import ExitPolicy

    policy = None
    if target_confidence is not None and budget is not None:
        raise AgripatchError("give either --target-confidence or --budget, not both")
    if target_confidence is not None or budget is not None:
        policy = ExitPolicy(budget_gmacs=budget, target_confidence=None if budget is not None else target_confidence)
    run_calibration(model, data, split=split, out=out, policy=policy, full_image_exit=full_image_exit,
                    symptom_prior=symptom_prior, map_side=map_side, log=err_console.print)


@predict_app.command("folder")
def predict_folder(
    input: Path = typer.Argument(..., help="Folder of photos."),
    model: Path = typer.Option(..., "--model", help="A model file written by `agripatch train`."),
    out: Path = typer.Option(..., "--out", help="Output folder: predictions, crops, overlays, index.html."),
    recursive: bool = typer.Option(False, "--recursive", help="Walk sub-folders too."),
    topk: int = typer.Option(3, help="How many classes to list per photo."),
    budget: Optional[float] = typer.Option(None, help="Mean GMACs per photo to spend."),
    thresholds: Optional[str] = typer.Option(None, help="Comma-separated exit thresholds, one per stage."),
    batch_size: int = typer.Option(PREDICT_BATCH_SIZE, help="Photos per batch: later exits read only the photos "
                                   "still running, so large batches keep them fast; lower it for huge photos on "
                                   "little memory."),
    workers: Optional[int] = typer.Option(None, help="Decoding worker processes (default: none on a CPU with 2 cores "
                                           "or fewer, where decoding between batches is faster; else 2)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    crops: bool = typer.Option(True, "--crops/--no-crops", help="Save each photo's patch crops for review."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Save each photo's heat-map overlay. "
                                  "With --no-crops too (and photos decoded in-process), photos are decoded at full "
                                  "size only when the cascade reads a patch: faster, same predictions."),
    backend: str = typer.Option("torch", "--backend", help="torch or onnxruntime (faster on a CPU; --model is an "
                                "`agripatch export` folder, or a model file exported once beside itself)."),
    int8: bool = typer.Option(False, "--int8", help="With --backend onnxruntime: run the export's int8 graphs."),
    writers: Optional[int] = typer.Option(None, "--writers", help="Photos whose crops and overlays are written at "
                                          "once (default: 1 on CPU; on a GPU one per core the decoding workers leave, up to 8)."),
    severity: Optional[bool] = typer.Option(None, "--severity/--no-severity", help="Measure each photo's severity "
                                            "(percent of the leaf with symptoms, and its class) with the package's "
                                            "symptom map when the model holds none; default: as the model file says."),
    precision: str = typer.Option("auto", "--precision", help="The PyTorch networks' dtype: auto (bf16 on CPUs with "
                                  "AMX units, measured faster there; else float32), float32 or bfloat16."),
) -> None:
    """Diagnose every photo in a folder and save the patches each diagnosis rests on, for review."""
    from agripatch.predict.folder import PredictOptions, run_predict_folder

    model = _model_for_backend(model, backend, int8)
    run_predict_folder(PredictOptions(input=input, model=model, out=out, recursive=recursive, topk=topk, budget=budget,
                                      thresholds=_threshold_list(thresholds), batch_size=batch_size, workers=workers,
                                      device=device, overwrite=overwrite, quiet=quiet, crops=crops, overlays=overlays,
                                      backend=backend, int8=int8, writers=writers, severity=severity,
                                      precision=precision))


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="A model file written by `agripatch train` (RUN/model.pt)."),
    format: str = typer.Option(..., "--format", help="onnx (ONNX Runtime) or tflite (LiteRT, needs litert-torch)."),
    out: Path = typer.Option(..., "--out", help="New folder for the graphs and cascade.json (must not exist)."),
    int8: bool = typer.Option(False, "--int8", help="Also write int8 graphs (ONNX Runtime static quantization)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Dataset root (its train split is used) "
                                               "or a folder of photos, to calibrate int8 on."),
    calibration_count: int = typer.Option(300, "--calibration-count", help="How many calibration photos (random, seeded)."),
) -> None:
    """Export a model to ONNX (or TFLite) graphs + cascade.json: the whole cascade then runs without PyTorch."""
    from agripatch.export.build import ExportOptions, export_model

    result = export_model(ExportOptions(model=model, format=format, out=out, int8=int8, calibration=calibration,
                                        calibration_count=calibration_count),
                          log=lambda message: err_console.print(message, markup=False, highlight=False))
    sizes = ", ".join(f"{name} ({size / 1e6:.2f} MB)" for name, size in result.files.items())
    console.print(f"exported {result.out}: {sizes}", markup=False, highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("agripatch-demo"), "--out", help="Folder for the whole demo."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Also diagnose a folder of your own photos."),
) -> None:
    """Synthesise leaves, train the smoke recipe, evaluate and predict: the whole product in a few minutes."""
    from agripatch.demo import run_demo

    run_demo(out, extra_photos=photos)


def main() -> None:
    """Console-script entry point: run the app, turning project errors into clean messages."""
    from agripatch.allocator import tune_memory_allocator

    tune_memory_allocator()
    try:
        app()
    except AgripatchError as error:
        from rich.markup import (
            escape,  # messages may hold brackets: pip install 'agripatch[onnx]', paths
        )

        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
