"""`agripatch predict folder`: diagnose every photo of a folder, keep the evidence, resume after a crash.

Flow: walk INPUT (sorted, lazily; only path strings are kept) -> skip what OUT already holds -> decode
in DataLoader workers (reduced JPEG decode when the cascade cannot use more pixels, see
:func:`~agripatch.pipeline.cascade.decode_min_side`) -> cascade on each batch -> per photo: crops of the K
boxes cut from the decoded (full-resolution unless reduced) photo, a heat overlay, one JSONL and one CSV
line -> at the end summary.json and index.html from the whole JSONL (so a resumed run lists every photo).
``crops=False`` / ``overlays=False`` (``--no-crops`` / ``--no-overlays``) skip those images when only the
diagnoses are wanted; the review page then lists the photos without them.

Durability: the prediction logs are fsynced per batch. Crops and overlays are renamed into place whole
but not fsynced (they are views of the photo and the logged boxes): a killed run never leaves half an
image, and only a power cut in the last seconds could leave one empty.

Memory stays bounded: at most ``workers * 2`` batches are decoded ahead (DataLoader prefetch) and
nothing but the result lines outlives its batch.

Exit thresholds, in order: ``--thresholds`` (1 or k + 1 comma-separated values), ``--budget GMACS``,
else the model file's (calibrated by `agripatch train`). A budget needs per-stage probabilities and no
labels exist here, so the FIRST batch of readable photos is run through every stage and
:func:`~agripatch.pipeline.cascade.thresholds_for_budget` picks the shared threshold whose mean cost on
that batch fits the budget, spending it on the least confident photos. It is an estimate from one
batch: the achieved mean GMACs is in summary.json; use a larger --batch-size for a steadier choice.
The choice is stored in run.json and reused when the run is resumed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from agripatch.errors import AgripatchError
from agripatch.io.atomic import atomic_write_bytes
from agripatch.pipeline.bundle import ModelBundle, load_model_file
from agripatch.pipeline.cascade import decode_min_side, parse_thresholds
from agripatch.predict.outputs import (
    CSV_COLUMNS,
    ERROR_COLUMNS,
    RUN_FORMAT,
    AppendLog,
    OutputDir,
    csv_line,
    csv_text,
    file_sha256,
    read_csv_rows,
    read_jsonl,
    safe_label,
    safe_stem,
    text,
)
from agripatch.predict.overlays import cut_crop, encode_jpeg, render_overlay
from agripatch.predict.records import csv_row, patch_reads, photo_record
from agripatch.predict.review import render_index
from agripatch.predict.scan import collate_photos, iter_photos

__all__ = ["PredictSummary", "run_predict_folder"]


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
                    thresholds=_json_thresholds(self.thresholds))
        extra = data.pop("extra")
        data.update(extra)
        return data


def run_predict_folder(
    input: str | Path,
    model: str | Path,
    out: str | Path,
    recursive: bool = False,
    topk: int = 3,
    budget: float | None = None,
    thresholds: str | None = None,
    batch_size: int = 16,
    workers: int = 2,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    crops: bool = True,
    overlays: bool = True,
) -> PredictSummary:
    """Predict every photo under ``input`` with the model file ``model`` and write the review into ``out``.

    Re-running the same command resumes (photos already in predictions.csv are skipped; the model file's
    sha256 in run.json must match, else an error unless ``overwrite``). Unreadable files are listed in
    errors.csv and the run goes on. Nothing is written outside ``out``. Returns a :class:`PredictSummary`.
    """
    from agripatch.device import resolve_device

    start = time.perf_counter()
    console = Console(stderr=True)
    _check_options(topk, batch_size, workers, budget, thresholds)
    input_dir = Path(input).expanduser().resolve()
    if not input_dir.is_dir():
        raise AgripatchError(f"input folder {str(input)!r} does not exist or is not a folder")
    model_path = Path(model).expanduser().resolve()
    if not model_path.is_file():
        raise AgripatchError(f"model file {str(model)!r} does not exist; train one with `agripatch train`")
    outdir = OutputDir(Path(out).expanduser())
    if outdir.root == input_dir:
        raise AgripatchError("--out must not be the input folder itself; use a new folder (it may sit inside it)")
    if outdir.root.exists() and not outdir.root.is_dir():
        raise AgripatchError(f"--out {str(out)!r} exists and is not a folder")
    outdir.root.mkdir(parents=True, exist_ok=True)
    if overwrite:
        outdir.clear()

    sha = file_sha256(model_path)
    settings = {"model_sha256": sha, "input": text(str(input_dir)), "topk": int(topk), "thresholds_option": thresholds,
                "budget_gmacs": budget}
    state = _load_state(outdir, settings, model_path)

    bundle = load_model_file(model_path)
    target = resolve_device(device)
    pipeline = bundle.pipeline.to(target).eval()
    cfg = pipeline.config
    n_stages = cfg.k + 1
    if state is not None and state.get("thresholds") is not None:
        chosen, source = [float(t) for t in state["thresholds"]], state["thresholds_source"]
    elif thresholds is not None:
        # Imported here: agripatch.engine.evaluate pulls in albumentations (~2 s) through the training data code.

        chosen, source = parse_thresholds(thresholds, n_stages), "--thresholds"
    elif budget is not None:
        chosen, source = None, f"--budget {budget:g} GMACs"
    else:
        chosen, source = list(cfg.thresholds), "model file"
    run_state = {"format": RUN_FORMAT, "tool": "agripatch predict folder", "model": text(str(model_path)), **settings,
                 "thresholds": _json_thresholds(chosen), "thresholds_source": source,
                 "created": (state or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))}
    if state is not None and "budget_calibration" in state:
        run_state["budget_calibration"] = state["budget_calibration"]
    outdir.write_text("run.json", json.dumps(run_state, indent=2, ensure_ascii=False) + "\n")

    done = _reconcile_logs(outdir)
    rf = _receptive_field(bundle)
    min_side = decode_min_side(cfg.glance_size, cfg.patch_size, rf) if rf else None
    todo = [rel for rel in iter_photos(input_dir, recursive=recursive, exclude=outdir.root) if text(rel) not in done]

    cell_boxes = _cell_boxes(bundle)
    writer = _PhotoWriter(outdir, bundle, topk, cell_boxes, crops=crops, overlays=overlays)
    dataset = PhotoDataset(input_dir, todo, min_side=min_side, glance_size=cfg.glance_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_photos)

    counts: Counter[str] = Counter()
    previous_errors = {row["path"]: row["reason"] for row in read_csv_rows(outdir.path("errors.csv"))}
    run_errors: dict[str, str] = {}
    new = 0
    progress = _progress(console, quiet)
    task = progress.add_task("predicting", total=len(todo), rate="", classes="")
    compute_start = time.perf_counter()
    with progress, AppendLog(outdir.path("predictions.jsonl")) as jsonl, \
            AppendLog(outdir.path("predictions.csv"), csv_line(CSV_COLUMNS)) as table, \
            AppendLog(outdir.path("errors.csv"), csv_line(ERROR_COLUMNS)) as errors_log:
        for batch in loader:
            bad = [item for item in batch if item["image"] is None]
            good = [item for item in batch if item["image"] is not None]
            error_lines = []
            for item in bad:
                rel, reason = text(item["path"]), str(item["error"])
                run_errors[rel] = reason
                progress.console.print(f"[yellow]unreadable[/yellow] {escape(rel)}: {escape(reason)}", highlight=False,
                                       soft_wrap=True)
                if previous_errors.get(rel) != reason:
                    error_lines.append(csv_line([rel, reason]))
            errors_log.append(error_lines)
            if good:
                if chosen is None:
                    chosen = _choose_for_budget(pipeline, good, budget, run_state, outdir)
                images = [item["image"] for item in good]
                glances = torch.stack([item["glance"] for item in good])
                results = pipeline.predict(images, glances, thresholds=chosen)
                records = [writer.write(item, result) for item, result in zip(good, results)]
                jsonl.append(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                table.append(csv_line(csv_row(r)) for r in records)
                counts.update(r["label"] for r in records)
                new += len(records)
            elapsed = max(time.perf_counter() - compute_start, 1e-9)
            progress.update(task, advance=len(batch), rate=f"{(new + len(run_errors)) / elapsed:.1f} photos/s",
                            classes=_class_counts(counts))

    if chosen is None:  # budget given but no readable photo: nothing was calibrated
        chosen = list(cfg.thresholds)
    outdir.write_text("errors.csv", csv_text(ERROR_COLUMNS, [[p, r] for p, r in run_errors.items()]))
    compute_s = time.perf_counter() - compute_start
    summary = _finish(outdir, bundle, input_dir, model_path, chosen, run_state, new, len(done), len(run_errors),
                      start, compute_s, min_side, str(target))
    if not quiet:
        console.print(f"{summary.photos} photos, {summary.errors} unreadable; review: "
                      f"[bold]{escape(str(summary.index_html))}[/bold]", highlight=False, soft_wrap=True)
    return summary


# ------------------------------------------------------------------------------------------- helpers


def _check_options(topk: int, batch_size: int, workers: int, budget: float | None, thresholds: str | None) -> None:
    if topk < 1:
        raise AgripatchError(f"--topk must be >= 1, got {topk}")
    if batch_size < 1:
        raise AgripatchError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise AgripatchError(f"--workers must be >= 0, got {workers}")
    if budget is not None and thresholds is not None:
        raise AgripatchError("give either --budget or --thresholds, not both")
    if budget is not None and not budget > 0:
        raise AgripatchError(f"--budget must be a positive number of GMACs per photo, got {budget}")


def _load_state(outdir: OutputDir, settings: dict[str, Any], model_path: Path) -> dict[str, Any] | None:
    """The previous run's run.json when resuming; clear errors when OUT holds another model's run."""
    path = outdir.path("run.json")
    if not path.exists():
        if outdir.path("predictions.csv").exists():
            raise AgripatchError(f"{outdir.root} holds predictions.csv but no run.json (not written by this version "
                                 "or damaged); use --overwrite to start over or choose another --out")
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise AgripatchError(f"{path} is unreadable ({error}); use --overwrite to start over") from None
    if state.get("format") != RUN_FORMAT:
        raise AgripatchError(f"{path} was not written by agripatch predict folder; choose another --out")
    if not _has_rows(outdir.path("predictions.csv")):
        return None  # nothing predicted yet (e.g. a budget that was refused): start afresh with any settings
    if state.get("model_sha256") != settings["model_sha256"]:
        raise AgripatchError(
            f"{outdir.root} holds predictions of another model ({state.get('model')}, sha256 "
            f"{str(state.get('model_sha256'))[:12]}...), not of {model_path} (sha256 {settings['model_sha256'][:12]}...); "
            "use --overwrite to replace them or choose another --out"
        )
    changed = [key for key in ("input", "topk", "thresholds_option", "budget_gmacs") if state.get(key) != settings[key]]
    if changed:
        detail = ", ".join(f"{key}: {state.get(key)!r} -> {settings[key]!r}" for key in changed)
        raise AgripatchError(f"{outdir.root} holds a run with other settings ({detail}); re-run with the same options "
                             "to resume, or use --overwrite to start over")
    return state


def _has_rows(path: Path) -> bool:
    """True when a CSV log holds at least one complete data row after its header."""
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        return handle.read(1 << 16).count(b"\n") >= 2


def _reconcile_logs(outdir: OutputDir) -> set[str]:
    """Paths present in BOTH predictions logs (after dropping torn lines); rewrite a log that has extras.

    A kill between the JSONL and the CSV append of a batch leaves rows in one log only; those photos are
    predicted again, so they are removed first to keep one row per photo.
    """
    csv_path, jsonl_path = outdir.path("predictions.csv"), outdir.path("predictions.jsonl")
    for path in (csv_path, jsonl_path):
        AppendLog(path).close()  # drops a trailing partial line
    csv_rows = read_csv_rows(csv_path)
    json_rows = list(read_jsonl(jsonl_path))
    done = {row["path"] for row in csv_rows} & {row.get("path") for row in json_rows}
    seen: set[str] = set()
    keep_csv = [row for row in csv_rows if row["path"] in done and not (row["path"] in seen or seen.add(row["path"]))]
    if len(keep_csv) != len(csv_rows):
        outdir.write_text("predictions.csv", csv_text(CSV_COLUMNS, [[row[c] for c in CSV_COLUMNS] for row in keep_csv]))
    seen = set()
    keep_json = [row for row in json_rows if row.get("path") in done and not (row["path"] in seen or seen.add(row["path"]))]
    if len(keep_json) != len(json_rows) or _has_torn_json(jsonl_path):
        outdir.write_text("predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep_json))
    return done


def _has_torn_json(path: Path) -> bool:
    if not path.exists():
        return False
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip()) != sum(1 for _ in read_jsonl(path))


def _json_thresholds(values: list[float] | None) -> list[float | str] | None:
    """Thresholds for JSON: a never-exit threshold (infinity) is written as the string "inf" (strict JSON has
    no infinity); ``float()`` reads both forms back."""
    if values is None:
        return None
    return [float(v) if math.isfinite(v) else "inf" for v in values]


def _receptive_field(bundle: ModelBundle) -> int | None:
    rf = getattr(bundle.pipeline.anchornet, "receptive_field", None)
    size = getattr(rf, "size", None)
    return int(size) if size else None


def _cell_boxes(bundle: ModelBundle) -> np.ndarray:
    size = bundle.pipeline.config.glance_size
    return bundle.pipeline.anchornet.cell_boxes(size, size).detach().cpu().numpy()


def _choose_for_budget(pipeline, good: list[dict[str, Any]], budget: float, run_state: dict[str, Any],
                       outdir: OutputDir) -> list[float]:
    """Pick exit thresholds for ``budget`` GMACs from the first batch's stage probabilities (no labels)."""
    from agripatch.pipeline.cascade import thresholds_for_budget

    outputs = pipeline.stage_probabilities([item["image"] for item in good], torch.stack([item["glance"] for item in good]))
    try:
        choice = thresholds_for_budget(outputs.probs, outputs.stage_macs, budget * 1e9)
    except ValueError:
        cheapest = float(outputs.stage_macs[0]) / 1e9
        raise AgripatchError(f"--budget {budget:g} GMACs is below the cheapest possible prediction (the glance alone "
                             f"costs {cheapest:.4f} GMACs per photo); raise the budget") from None
    run_state["thresholds"] = _json_thresholds(choice.thresholds)
    run_state["budget_calibration"] = {"photos": len(good), "expected_mean_gmacs": choice.mean_macs / 1e9,
                                       "exit_histogram": list(choice.exit_histogram)}
    outdir.write_text("run.json", json.dumps(run_state, indent=2, ensure_ascii=False) + "\n")
    return list(choice.thresholds)


class _PhotoWriter:
    """Writes one photo's crops and overlay, and returns its record."""

    def __init__(self, outdir: OutputDir, bundle: ModelBundle, topk: int, cell_boxes: np.ndarray, *,
                 crops: bool = True, overlays: bool = True):
        self.outdir = outdir
        self.crops = crops
        self.overlays = overlays
        self.classes = [text(str(c)) for c in bundle.classes]
        self.labels = [safe_label(name, i) for i, name in enumerate(self.classes)]
        self.topk = topk
        self.cell_boxes = cell_boxes
        self.glance_size = bundle.pipeline.config.glance_size

    def write(self, item: dict[str, Any], result) -> dict[str, Any]:
        rel = text(item["path"])
        stem = safe_stem(item["path"])
        reads = patch_reads(result)
        names: list[str | None] = []
        overlay = None
        if self.crops or self.overlays:
            image = np.ascontiguousarray(item["image"].permute(1, 2, 0).numpy())
        if self.crops:
            crop_dir = f"crops/{stem}"
            for k, box in enumerate(np.asarray(result.boxes)):
                if k < len(reads):
                    index, prob = reads[k]
                    names.append(f"{crop_dir}/patch{k + 1}_{self.labels[index]}_{prob:.3f}.jpg")
                else:
                    names.append(f"{crop_dir}/patch{k + 1}_unread.jpg")
                atomic_write_bytes(self.outdir.path(names[-1]), encode_jpeg(cut_crop(image, box)), durable=False)
            self._drop_stale(crop_dir, set(names))
        if self.overlays:
            overlay = f"overlays/{stem}.jpg"
            read = [k < len(reads) for k in range(len(result.boxes))]
            picture = render_overlay(image, np.asarray(result.boxes), read, result.cam,
                                     self.cell_boxes if result.cam is not None else None, self.glance_size)
            atomic_write_bytes(self.outdir.path(overlay), encode_jpeg(picture, quality=85), durable=False)
        return photo_record(rel, result, self.classes, self.topk, item["decoded_hw"], item["original_hw"],
                            crops=names, overlay=overlay)

    def _drop_stale(self, crop_dir: str, keep: set[str]) -> None:
        """Remove crops of an earlier, interrupted attempt at this photo that this attempt did not rewrite."""
        folder = self.outdir.path(crop_dir)
        if not folder.is_dir():
            return
        for file in folder.iterdir():
            if file.name.startswith("patch") and file.suffix == ".jpg" and f"{crop_dir}/{file.name}" not in keep:
                file.unlink(missing_ok=True)


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


def _finish(outdir: OutputDir, bundle: ModelBundle, input_dir: Path, model_path: Path, chosen: list[float],
            run_state: dict[str, Any], new: int, resumed: int, errors: int, start: float, compute_s: float,
            min_side: int | None, device: str) -> PredictSummary:
    """summary.json and index.html from the complete JSONL (this run's rows and any resumed ones)."""
    records = list(read_jsonl(outdir.path("predictions.jsonl")))
    classes = [text(str(c)) for c in bundle.classes]
    per_class = {name: 0 for name in classes}
    hist = [0] * (bundle.pipeline.config.k + 1)
    for record in records:
        per_class[classes[int(record["label_index"])]] += 1
        hist[int(record["stage"])] += 1
    mean_macs = float(np.mean([r["macs"] for r in records])) if records else 0.0
    index_path = outdir.path("index.html")
    subtitle = f"model {model_path.name} · {len(classes)} classes · thresholds {', '.join(f'{t:g}' for t in chosen)}"
    outdir.write_text("index.html", render_index(records, classes, outdir.root, input_dir, subtitle=subtitle,
                                                 errors=errors, title=f"agripatch: {input_dir.name}"))
    wall = time.perf_counter() - start
    summary = PredictSummary(
        out=outdir.root, index_html=index_path, photos=len(records), new=new, resumed=resumed, errors=errors,
        per_class=per_class, exit_histogram=hist, mean_macs=mean_macs,
        photos_per_s=(new + errors) / compute_s if compute_s > 0 else 0.0, wall_s=wall,
        thresholds=[float(t) for t in chosen], thresholds_source=run_state["thresholds_source"],
        model=text(str(model_path)),
        extra={"model_sha256": run_state["model_sha256"], "input": text(str(input_dir)), "device": device,
               "decode_min_side": min_side, "classes": classes,
               **({"budget_calibration": run_state["budget_calibration"]} if "budget_calibration" in run_state else {})},
    )
    outdir.write_text("summary.json", json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
    return summary
