"""Resuming `predict folder`: the previous run's settings (run.json) and the photos its logs already hold.

A re-run with the same model and options continues where a killed run stopped: photos present in BOTH
prediction logs are done; a line torn by the kill is dropped, and rows only one log got are removed so
that each photo ends with exactly one row in each. Under torchrun each rank applies these same rules to
its own part of OUT (``OUT/parts/rank-<r>-of-<n>/``, see :mod:`agripatch.predict.shards`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agripatch.errors import AgripatchError
from agripatch.pipeline.exits import choose_thresholds, json_thresholds
from agripatch.pipeline.predictor_base import BasePredictor
from agripatch.predict.backend import model_identity
from agripatch.predict.outputs import (
    CSV_COLUMNS,
    RUN_FORMAT,
    AppendLog,
    OutputDir,
    csv_text,
    read_csv_rows,
    read_jsonl,
    text,
)

if TYPE_CHECKING:
    from agripatch.predict.options import PredictOptions

__all__ = ["budget_thresholds", "has_rows", "load_state", "reconcile_logs", "resume_run", "save_state",
           "write_run_state"]

#: Settings a resumed run must share with the run it continues. ``precision`` is the dtype the networks ran in
#: (what ``--precision auto`` chose on that machine): a run resumed on another kind of CPU would otherwise mix
#: float32 and bf16 answers in one output. Run files written before it was recorded resume with any precision.
RESUME_KEYS = ("input", "topk", "thresholds_option", "budget_gmacs", "severity_option", "precision")
_RECORDED_LATER = ("precision",)


def load_state(outdir: OutputDir, settings: dict[str, Any], model_path: Path) -> dict[str, Any] | None:
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
        if str(state.get("format", "")).startswith("agripatch-predict-folder/"):
            raise AgripatchError(f"{path} was written by another version of agripatch predict folder (its files have "
                                 "other columns); use --overwrite to start over or choose another --out")
        raise AgripatchError(f"{path} was not written by agripatch predict folder; choose another --out")
    if not has_rows(outdir.path("predictions.csv")):
        return None  # nothing predicted yet (e.g. a budget that was refused): start afresh with any settings
    if state.get("model_sha256") != settings["model_sha256"]:
        raise AgripatchError(
            f"{outdir.root} holds predictions of another model ({state.get('model')}, sha256 "
            f"{str(state.get('model_sha256'))[:12]}...), not of {model_path} (sha256 {settings['model_sha256'][:12]}...); "
            "use --overwrite to replace them or choose another --out"
        )
    changed = [key for key in RESUME_KEYS
               if state.get(key) != settings[key] and not (key in _RECORDED_LATER and key not in state)]
    if changed:
        detail = ", ".join(f"{key}: {state.get(key)!r} -> {settings[key]!r}" for key in changed)
        raise AgripatchError(f"{outdir.root} holds a run with other settings ({detail}); re-run with the same options "
                             "to resume, or use --overwrite to start over")
    return state


def has_rows(path: Path) -> bool:
    """True when a CSV log holds at least one complete data row after its header."""
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        return handle.read(1 << 16).count(b"\n") >= 2


def reconcile_logs(outdir: OutputDir) -> set[str]:
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
        outdir.write_text("predictions.csv", csv_text(CSV_COLUMNS, [[row.get(c) or "" for c in CSV_COLUMNS] for row in keep_csv]))
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


def save_state(outdir: OutputDir, state: dict[str, Any]) -> None:
    """Write run.json (atomically) with what :func:`load_state` reads back."""
    outdir.write_text("run.json", json.dumps(state, indent=2, ensure_ascii=False) + "\n")


def write_run_state(options: PredictOptions, input_dir: Path, model_path: Path, outdir: OutputDir,
                    stored: list[float], floor: float | None = None, *, precision: str) -> dict[str, Any]:
    """run.json for this run: the settings a resume must match (``precision``: the dtype the networks run in), and
    the thresholds when already known (raised to the refusal rule's ``unsure`` confidence ``floor``, as the
    predictor runs them)."""
    settings = {"model_sha256": model_identity(model_path, options.int8), "input": text(str(input_dir)),
                "topk": int(options.topk), "thresholds_option": options.thresholds, "budget_gmacs": options.budget,
                "severity_option": options.severity, "precision": precision}
    previous = load_state(outdir, settings, model_path)
    policy = options.policy(stored)
    state = {"format": RUN_FORMAT, "tool": "agripatch predict folder", "model": text(str(model_path)), **settings,
             "thresholds": None, "thresholds_source": policy.describe(),
             "created": (previous or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))}
    if previous is not None and previous.get("thresholds") is not None:
        state.update(thresholds=previous["thresholds"], thresholds_source=previous["thresholds_source"])
        if "budget_calibration" in previous:
            state["budget_calibration"] = previous["budget_calibration"]
    elif not policy.needs_outputs:
        state["thresholds"] = json_thresholds(choose_thresholds(policy, len(stored), floor=floor).thresholds)
    save_state(outdir, state)
    return state


def budget_thresholds(predictor: BasePredictor, options: PredictOptions, good: list[dict[str, Any]],
                      state: dict[str, Any], outdir: OutputDir) -> None:
    """Choose the budget's thresholds on the first readable batch and record them in run.json."""
    outputs = predictor.exit_probabilities(good)
    choice = choose_thresholds(options.policy([]), predictor.n_exits, outputs, floor=predictor.unsure_floor)
    predictor.thresholds = list(choice.thresholds)
    state["thresholds"] = json_thresholds(choice.thresholds)
    state["budget_calibration"] = {"photos": len(good), "expected_mean_gmacs": choice.mean_macs / 1e9,
                                   "exit_histogram": list(choice.exit_histogram)}
    save_state(outdir, state)


def resume_run(options: PredictOptions, input_dir: Path, model_path: Path, part: OutputDir,
               predictor: BasePredictor) -> tuple[dict[str, Any], set[str]]:
    """This process's run.json (its thresholds applied to the predictor) and the photos its logs hold."""
    state = write_run_state(options, input_dir, model_path, part, predictor.thresholds, predictor.unsure_floor,
                            precision=predictor.precision)
    if state["thresholds"] is not None:
        predictor.thresholds = [float(t) for t in state["thresholds"]]
    return state, reconcile_logs(part)
