"""`agripatch predict folder`: diagnose every photo of a folder, keep the evidence, resume after a crash.

Steps (:func:`run_predict_folder`): check the options -> open OUT and read any previous run's state ->
load the model and choose the exit thresholds (:func:`~agripatch.pipeline.exits.choose_thresholds`) ->
list the photos not yet done -> decode them in DataLoader workers, or between batches on a CPU with few
cores (:func:`~agripatch.device.decoding_workers`; reduced JPEG decode when the cascade cannot use more
pixels) -> per batch: the cascade, each photo's crops and overlay, one JSONL and one CSV line (fsynced per batch) -> summary.json and index.html from the whole JSONL (so a resumed run lists
every photo).

Under torchrun (WORLD_SIZE > 1) every rank runs these same steps on its share of the photos, in its own
part of OUT, and rank 0 merges the parts into the files one process writes (:mod:`agripatch.predict.shards`);
the steps marked "(ranks)" below are where they meet. In one process they do nothing more than before.

Exit thresholds, in order: those of the run being resumed (run.json), ``thresholds`` (1 or k + 1
values), ``budget`` (GMACs per photo), else the model file's. A budget needs per-stage probabilities and
no labels exist here, so the FIRST batch of readable photos is run through every stage and the shared
threshold whose mean cost on it fits the budget is used for the whole run (an estimate from one batch:
the achieved mean is in summary.json; a larger ``batch_size`` steadies it). Under torchrun rank 0 chooses
them on that same batch of the whole listing and sends them to every rank.

Memory stays bounded: at most ``workers * 2`` batches are decoded ahead and nothing but the result lines
outlives its batch. Nothing is written outside OUT.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.data import DataLoader

from agripatch.data.photos import PhotoDataset
from agripatch.device import decoding_workers, evidence_writers, share_cores
from agripatch.distributed import (
    DistContext,
    all_gather_objects,
    broadcast_object,
    init_distributed,
    object_group,
    shutdown,
)
from agripatch.errors import AgripatchError
from agripatch.pipeline.exits import json_thresholds
from agripatch.pipeline.predictor_base import defers_full_decode
from agripatch.pipeline.records import csv_row, severity_summary
from agripatch.predict import shards
from agripatch.predict.backend import (
    check_model,
    make_predictor,
)
from agripatch.predict.evidence import EvidenceWriter
from agripatch.predict.options import PredictOptions
from agripatch.predict.outputs import (
    CSV_COLUMNS,
    ERROR_COLUMNS,
    AppendLog,
    OutputDir,
    csv_line,
    csv_text,
    read_csv_rows,
    read_jsonl,
    text,
)
from agripatch.predict.predictor import Predictor
from agripatch.predict.resume import budget_thresholds, resume_run, save_state
from agripatch.predict.review import render_index
from agripatch.predict.scan import iter_photos

__all__ = ["PredictOptions", "PredictSummary", "run_predict_folder"]


@dataclass
class PredictSummary:
    """What a `predict folder` run produced (also written to OUT/summary.json)."""

    out: Path
    index_html: Path
    photos: int
    new: int
    resumed: int
    errors: int
    per_class: dict[str, int]
    exit_histogram: list[int]
    mean_macs: float
    photos_per_s: float
    wall_s: float
    thresholds: list[float]
    thresholds_source: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        data = asdict(self)
        data.update(out=str(self.out), index_html=str(self.index_html), mean_gmacs=self.mean_macs / 1e9,
                    thresholds=json_thresholds(self.thresholds))
        data.update(data.pop("extra"))
        return data


# ------------------------------------------------------------------------------------------- steps


def _open_output(options: PredictOptions, ctx: DistContext) -> tuple[Path, Path, OutputDir]:
    """Resolved input folder, model path and OUT (created; cleared of this tool's files with overwrite, by
    rank 0 only; else checked to hold no run of another number of processes)."""
    input_dir = Path(options.input).expanduser().resolve()
    if not input_dir.is_dir():
        raise AgripatchError(f"input folder {str(options.input)!r} does not exist or is not a folder")
    model_path = Path(options.model).expanduser().resolve()
    check_model(options.backend, model_path, options.model)
    outdir = OutputDir(Path(options.out).expanduser())
    if outdir.root == input_dir:
        raise AgripatchError("--out must not be the input folder itself; use a new folder (it may sit inside it)")
    if outdir.root.exists() and not outdir.root.is_dir():
        raise AgripatchError(f"--out {str(options.out)!r} exists and is not a folder")
    outdir.root.mkdir(parents=True, exist_ok=True)
    if not options.overwrite:
        shards.check_world(outdir, ctx.world_size)
    elif ctx.is_main:
        outdir.clear()
        shards.clear_parts(outdir)
    return input_dir, model_path, outdir


def _same_thresholds(ctx: DistContext, group: Any, options: PredictOptions, predictor: Predictor,
                     state: dict[str, Any], part: OutputDir, input_dir: Path, listing: list[str]) -> None:
    """(ranks) One set of exit thresholds on every rank: a part's recorded ones, else, for a budget, rank 0's
    choice on the first batch of the whole listing with a readable photo (the batch one process uses)."""

    def first_batch() -> tuple[Any, Any]:
        dataset = PhotoDataset(input_dir, listing, min_side=predictor.decode_min_side(),
                               glance_size=predictor.glance_size, orientation=predictor.orientation)
        for start in range(0, len(listing), options.batch_size):
            batch = [dataset[i] for i in range(start, min(start + options.batch_size, len(listing)))]
            good = [item for item in batch if item["image"] is not None]
            if good:
                budget_thresholds(predictor, options, good, state, part)
                return state["thresholds"], state["budget_calibration"]
        return None, None  # nothing readable: nothing to choose them for

    thresholds, calibration = shards.agree_thresholds(
        ctx, group, (state["thresholds"], state.get("budget_calibration")), first_batch)
    if thresholds is not None and (thresholds, calibration) != (state["thresholds"], state.get("budget_calibration")):
        state["thresholds"] = thresholds
        if calibration is not None:
            state["budget_calibration"] = calibration
        save_state(part, state)
    if thresholds is not None:
        predictor.thresholds = [float(t) for t in thresholds]


def _on_gpu(predictor: Predictor) -> bool:
    """Whether the model runs on a GPU: a torch CUDA device, or ONNX Runtime's CUDAExecutionProvider."""
    return "cuda" in predictor.device.lower()


def _defers_full_decode(options: PredictOptions) -> bool:
    """:func:`~agripatch.pipeline.predictor_base.defers_full_decode` for this run's options."""
    return defers_full_decode(workers=options.workers, review_images=options.crops or options.overlays)


class _FolderRun:
    """The batch loop: errors to errors.csv, diagnoses to the two logs (in ``outdir``: OUT, or this rank's
    part of it), evidence (crops, overlays) in ``evidence`` (OUT; default ``outdir``)."""

    def __init__(self, options: PredictOptions, predictor: Predictor, outdir: OutputDir, state: dict[str, Any],
                 evidence: OutputDir | None = None):
        self.options = options
        self.predictor = predictor
        self.outdir = outdir
        self.state = state
        self.writer = EvidenceWriter(evidence or outdir, predictor, crops=options.crops, overlays=options.overlays,
                                     writers=options.writers or evidence_writers(_on_gpu(predictor), options.workers))
        self.previous_errors = {row["path"]: row["reason"] for row in read_csv_rows(outdir.path("errors.csv"))}
        self.errors: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.new = 0
        self.pending: list[dict[str, Any]] = []  # records whose images are still being written
        self.appended = 0  # batches whose lines are in the logs

    def batch(self, batch: list[dict[str, Any]], logs: dict[str, AppendLog], console: Console) -> None:
        """Log the unreadable photos, diagnose the others; the previous batch's lines are appended (fsynced) once
        its images are on disk, while this batch's images are written in the background."""
        lines = []
        for item in (item for item in batch if item["image"] is None):
            rel, reason = text(item["path"]), str(item["error"])
            self.errors[rel] = reason
            console.print(f"[yellow]unreadable[/yellow] {escape(rel)}: {escape(reason)}", highlight=False, soft_wrap=True)
            if self.previous_errors.get(rel) != reason:
                lines.append(csv_line([rel, reason]))
        logs["errors"].append(lines)
        good = [item for item in batch if item["image"] is not None]
        if not good:
            return
        if self.state["thresholds"] is None:
            budget_thresholds(self.predictor, self.options, good, self.state, self.outdir)
        results = self.predictor.run(good)
        self.flush(logs)
        self.pending = self.writer.write_batch(good, results)
        self.counts.update(r["label"] for r in self.pending)
        self.new += len(self.pending)

    def flush(self, logs: dict[str, AppendLog]) -> None:
        """Wait for the pending records' images, then append their lines to both logs (fsynced)."""
        self.writer.wait()
        records, self.pending = self.pending, []
        if records:
            logs["jsonl"].append(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            logs["csv"].append(csv_line(csv_row(r)) for r in records)
            self.appended += 1


def _progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[classes]}"),
        console=console, disable=quiet, transient=False,
    )


def _class_counts(counts: Counter[str], shown: int = 4) -> str:
    top = counts.most_common(shown)
    line = " ".join(f"{name[:18]}:{n}" for name, n in top)
    return line + (" ..." if len(counts) > shown else "")


def _loop(run: _FolderRun, loader: DataLoader, total: int, console: Console, *, show: bool = True,
          after_batch: Callable[[int], None] | None = None) -> float:
    """Run every batch under a progress bar (when ``show``); returns the compute seconds.
    ``after_batch(batches appended so far)`` is the kill test hook (:func:`~agripatch.predict.shards.kill_hook`)."""
    outdir = run.outdir
    progress = _progress(console, run.options.quiet or not show)
    task = progress.add_task("predicting", total=total, rate="", classes="")
    start = time.perf_counter()
    with progress, AppendLog(outdir.path("predictions.jsonl")) as jsonl, \
            AppendLog(outdir.path("predictions.csv"), csv_line(CSV_COLUMNS)) as table, \
            AppendLog(outdir.path("errors.csv"), csv_line(ERROR_COLUMNS)) as errors_log:
        logs = {"jsonl": jsonl, "csv": table, "errors": errors_log}
        try:
            for batch in loader:
                run.batch(batch, logs, progress.console)
                elapsed = max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=len(batch), rate=f"{(run.new + len(run.errors)) / elapsed:.1f} photos/s",
                                classes=_class_counts(run.counts))
                if after_batch is not None:
                    after_batch(run.appended)
            run.flush(logs)
        finally:
            run.writer.close()
    return time.perf_counter() - start


@dataclass
class _Tally:
    """What this run did (summed over the ranks under torchrun)."""

    new: int  # photos diagnosed
    resumed: int  # photos the logs already held
    errors: int  # unreadable photos
    read: int  # photos decoded (diagnosed or unreadable)
    compute_s: float  # seconds in the batch loop (the slowest rank's under torchrun)
    writers: int = 1  # photos whose review images were encoded at once (per process)


def _severity_names(predictor: Predictor) -> list[str]:
    """The severity classes of the predictor's cascade, mildest first (none without severity)."""
    severity = predictor.config.severity
    return list(severity.names) if severity is not None else []


def _finish(outdir: OutputDir, predictor: Predictor, state: dict[str, Any], input_dir: Path, model_path: Path,
            tally: _Tally, start: float, extra: dict[str, Any] | None = None) -> PredictSummary:
    """summary.json and index.html from OUT's complete logs (this run's rows and any resumed ones)."""
    records = list(read_jsonl(outdir.path("predictions.jsonl")))
    classes = predictor.classes
    per_class = {name: 0 for name in classes}
    hist = [0] * predictor.n_exits
    decisions: dict[str, int] = {}
    for record in records:
        per_class[classes[int(record["label_index"])]] += 1
        hist[int(record["stage"])] += 1
        decision = record.get("decision", classes[int(record["label_index"])])
        decisions[decision] = decisions.get(decision, 0) + 1
    chosen = [float(t) for t in (state["thresholds"] or predictor.thresholds)]
    subtitle = f"model {model_path.name} · {len(classes)} classes · thresholds {', '.join(f'{t:g}' for t in chosen)}"
    outdir.write_text("index.html", render_index(records, classes, outdir.root, input_dir, subtitle=subtitle,
                                                 errors=tally.errors, title=f"agripatch: {input_dir.name}",
                                                 run_id=state["model_sha256"][:16] + ":" + text(str(input_dir)),
                                                 refusal_available=predictor.refuses))
    extra = {"model_sha256": state["model_sha256"], "input": text(str(input_dir)), "device": predictor.device,
             "precision": predictor.precision,
             "decode_min_side": predictor.decode_min_side(), "classes": classes, "decisions": decisions,
             "refusal_available": predictor.refuses, "writers": tally.writers, "severity": severity_summary(records, _severity_names(predictor)),
             "photo_orientation": predictor.orientation or "any", "turned": sum(1 for r in records if r.get("turned")),
             "judged_on_views": sum(1 for r in records if r.get("refusal_view")),
             **(extra or {})}
    if "budget_calibration" in state:
        extra["budget_calibration"] = state["budget_calibration"]
    summary = PredictSummary(
        out=outdir.root, index_html=outdir.path("index.html"), photos=len(records), new=tally.new,
        resumed=tally.resumed, errors=tally.errors, per_class=per_class, exit_histogram=hist,
        mean_macs=float(np.mean([r["macs"] for r in records])) if records else 0.0,
        photos_per_s=tally.read / tally.compute_s if tally.compute_s > 0 else 0.0,
        wall_s=time.perf_counter() - start, thresholds=chosen, thresholds_source=state["thresholds_source"],
        model=text(str(model_path)), extra=extra)
    outdir.write_text("summary.json", json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
    return summary


def _merge(ctx: DistContext, group: Any, outdir: OutputDir, predictor: Predictor, state: dict[str, Any],
           input_dir: Path, model_path: Path, listing: list[str], tally: _Tally, start: float) -> PredictSummary:
    """(ranks) Wait for every rank; rank 0 merges the parts into OUT's logs, summary.json and index.html;
    every rank returns that summary."""
    share = len(shards.shard(listing, ctx.rank, ctx.world_size))
    ranks = all_gather_objects(ctx, (tally, share, predictor.device), group)
    summary = None
    if ctx.is_main:
        merged = shards.merge_parts(outdir, listing, ctx.world_size)
        tallies = [t for t, _, _ in ranks]
        total = _Tally(new=sum(t.new for t in tallies), resumed=sum(t.resumed for t in tallies),
                       errors=merged["errors"], read=sum(t.read for t in tallies),
                       compute_s=max(t.compute_s for t in tallies), writers=max(t.writers for t in tallies))
        extra = {"world_size": ctx.world_size, "photos_per_rank": [t.read for t in tallies],
                 "listed_per_rank": [n for _, n, _ in ranks], "devices": [d for _, _, d in ranks]}
        summary = _finish(outdir, predictor, state, input_dir, model_path, total, start, extra)
    return broadcast_object(ctx, summary, 0, group)


def _predict(options: PredictOptions, ctx: DistContext, console: Console, start: float) -> PredictSummary:
    """The steps, in one process or on each torchrun rank (see the module docstring)."""
    group = object_group(ctx)  # (ranks) how ranks exchange small objects; None in one process
    input_dir, model_path, outdir = shards.settle(ctx, group, lambda: _open_output(options, ctx))
    part = shards.part_dir(outdir, ctx)  # where this process's logs go: OUT itself in one process
    predictor = make_predictor(options, model_path, torch_device=str(ctx.device))
    if options.workers is None:  # a CPU with few cores decodes between batches (device.decoding_workers)
        options = replace(options, workers=decoding_workers(_on_gpu(predictor)))
    if ctx.device.type == "cpu":
        share_cores(options.workers)  # decoding workers and torch threads on the same cores wait for each other
    state, held = shards.settle(ctx, group, lambda: resume_run(options, input_dir, model_path, part, predictor))
    listing = broadcast_object(  # (ranks) rank 0 lists the folder for all
        ctx, list(iter_photos(input_dir, recursive=options.recursive, exclude=outdir.root)) if ctx.is_main else None,
        0, group)
    done = set().union(*all_gather_objects(ctx, held, group)) if ctx.distributed else held  # (ranks) in any part
    if ctx.distributed:
        _same_thresholds(ctx, group, options, predictor, state, part, input_dir, listing)
    todo = [rel for rel in shards.shard(listing, ctx.rank, ctx.world_size) if text(rel) not in done]
    dataset = PhotoDataset(input_dir, todo, min_side=predictor.decode_min_side(), glance_size=predictor.glance_size,
                           defer_full=_defers_full_decode(options), orientation=predictor.orientation)
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=options.workers,
                        collate_fn=list)
    run = _FolderRun(options, predictor, part, state, evidence=outdir)
    compute_s = _loop(run, loader, len(todo), console, show=ctx.is_main, after_batch=shards.kill_hook(ctx.rank))
    part.write_text("errors.csv", csv_text(ERROR_COLUMNS, [[p, r] for p, r in run.errors.items()]))
    tally = _Tally(new=run.new, resumed=len(held), errors=len(run.errors), read=run.new + len(run.errors),
                   compute_s=compute_s, writers=run.writer.writers)
    if ctx.distributed:
        return _merge(ctx, group, outdir, predictor, state, input_dir, model_path, listing, tally, start)
    return _finish(outdir, predictor, state, input_dir, model_path, tally, start)


def run_predict_folder(options: PredictOptions) -> PredictSummary:
    """Predict every photo under ``options.input`` with the model file ``options.model``; write the review
    into ``options.out``.

    Re-running the same command resumes (photos already in predictions.csv are skipped; the model file's
    sha256 in run.json must match, else an error unless ``overwrite``). Unreadable files are listed in
    errors.csv and the run goes on. Launched by torchrun with several processes, each predicts its share and
    rank 0 merges (:mod:`agripatch.predict.shards`). Returns a :class:`PredictSummary`.
    """
    start = time.perf_counter()
    console = Console(stderr=True)
    options.check()
    ctx = init_distributed(options.device)  # one process, unless torchrun launched several (WORLD_SIZE > 1)
    try:
        summary = _predict(options, ctx, console, start)
    finally:
        shutdown(ctx)
    if not options.quiet and ctx.is_main:
        turned = summary.extra.get("turned", 0)
        console.print(f"{summary.photos} photos, {summary.errors} unreadable"
                      + (f", {turned} read turned a quarter clockwise (the model was trained on "
                         f"{summary.extra['photo_orientation']} photos)" if turned else "")
                      + f"; review: [bold]{escape(str(summary.index_html))}[/bold]", highlight=False, soft_wrap=True)
    return summary
