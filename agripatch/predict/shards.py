"""`predict folder` across processes and machines: one share of the photos per torchrun rank, one merge.

Launched by torchrun (WORLD_SIZE > 1), every rank runs the same steps as a single process
(:func:`agripatch.predict.folder.run_predict_folder`) on its own share of the photos:

* **Sharding**: rank 0 lists the folder once (sorted, as one process would) and sends the listing to every
  rank; photo ``i`` of it belongs to rank ``i % world_size`` (:func:`shard`). A photo any part already
  holds is skipped by every rank, so a folder that gained photos since a killed run never predicts one twice.
* **Parts**: each rank writes its own ``OUT/parts/rank-<r>-of-<n>/`` (``predictions.csv``,
  ``predictions.jsonl``, ``errors.csv``, ``run.json``) with the same append logs and resume rules as a
  single process, so each rank resumes on its own after a kill. Crops and overlays go to the shared
  ``OUT/crops`` and ``OUT/overlays`` (their names are unique per photo).
* **Merge**: when every rank is done, rank 0 writes ``OUT/predictions.csv``, ``predictions.jsonl`` and
  ``errors.csv`` with the parts' rows in the order of the listing (:func:`merge_order`), so they are
  byte for byte what one process writes, then ``summary.json`` (plus ``world_size`` and
  ``photos_per_rank``) and ``index.html`` from them.
* **Thresholds**: exit thresholds are the same on every rank. Those a part already recorded win (every
  recorded part must agree); else with ``--budget`` rank 0 chooses them on the first batch of the whole
  listing that holds a readable photo (the batch one process would choose them on) and broadcasts them.
* **World size**: OUT remembers how many processes wrote it (the ``rank-<r>-of-<n>`` folders, or a top-level
  ``run.json`` for one process). Resuming with another number of processes is an error that says what to
  do (:func:`check_world`); ``--overwrite`` starts over.

OUT (and the photo folder) must be one shared folder, at the same path on every machine.

Ranks exchange small Python objects over a gloo group with a long timeout
(:func:`agripatch.distributed.object_group`), so a rank that finished its share waits for the slowest one
however long it takes, on CPU and GPU alike. An :class:`~agripatch.errors.AgripatchError` raised on any rank
during setup is raised on every rank (:func:`settle`), so a wrong option ends the whole job cleanly.

Test hook: ``AGRIPATCH_TEST_KILL_AFTER_BATCHES="<rank>:<n>"`` makes that rank SIGKILL itself right after
appending its n-th batch (see :func:`kill_hook`); the resume tests use it to kill one rank mid-run
deterministically. It is read from the environment only, never set by agripatch.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agripatch.distributed import DistContext, all_gather_objects, broadcast_object
from agripatch.errors import AgripatchError
from agripatch.predict.outputs import (
    CSV_COLUMNS,
    ERROR_COLUMNS,
    OWN_FILES,
    OutputDir,
    csv_text,
    read_csv_rows,
    text,
)
from agripatch.predict.resume import has_rows

__all__ = [
    "KILL_HOOK_ENV",
    "PARTS",
    "agree_thresholds",
    "check_world",
    "clear_parts",
    "kill_hook",
    "merge_order",
    "merge_parts",
    "part_dir",
    "part_name",
    "recorded_worlds",
    "settle",
    "shard",
]

PARTS = "parts"
KILL_HOOK_ENV = "AGRIPATCH_TEST_KILL_AFTER_BATCHES"
_PART_NAME = re.compile(r"^rank-(\d+)-of-(\d+)$")
T = TypeVar("T")


# ------------------------------------------------------------------------------------ pure functions


def part_name(rank: int, world_size: int) -> str:
    """The folder of one rank's part, relative to OUT: ``parts/rank-<r>-of-<n>``."""
    return f"{PARTS}/rank-{rank}-of-{world_size}"


def shard(listing: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of the listing: items ``rank, rank + n, rank + 2n, ...`` (item i -> rank i % n)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return list(listing[rank::world_size])


def merge_order(listing: Sequence[str], keys: Iterable[str]) -> list[str]:
    """``keys`` (the parts' photo paths, parts in rank order) in the order one process would write them.

    Paths of the listing come in listing order; paths it no longer holds (a photo deleted since an earlier
    run: one process keeps its row too) follow in the order met; a path met twice is kept once.
    """
    position = {path: i for i, path in enumerate(listing)}
    seen: dict[str, None] = {}
    for key in keys:
        seen.setdefault(key, None)
    known = sorted((key for key in seen if key in position), key=position.__getitem__)
    return known + [key for key in seen if key not in position]


# ------------------------------------------------------------------------------------------ layout


def part_dir(outdir: OutputDir, ctx: DistContext) -> OutputDir:
    """Where this process keeps its logs and run.json: OUT itself in one process, its part under torchrun."""
    if not ctx.distributed:
        return outdir
    part = OutputDir(outdir.path(part_name(ctx.rank, ctx.world_size)))
    part.root.mkdir(parents=True, exist_ok=True)
    return part


def _part_folders(outdir: OutputDir) -> list[tuple[int, int, Path]]:
    """(rank, world size, folder) of every ``parts/rank-<r>-of-<n>`` folder under OUT."""
    parts = outdir.path(PARTS)
    if not parts.is_dir():
        return []
    found = []
    for folder in sorted(parts.iterdir()):
        match = _PART_NAME.match(folder.name)
        if match and folder.is_dir() and not folder.is_symlink():
            found.append((int(match.group(1)), int(match.group(2)), folder))
    return found


def recorded_worlds(outdir: OutputDir) -> set[int]:
    """How many processes wrote the predictions OUT holds: the ``n`` of every part that holds a row, and 1
    for a single-process run (a top-level run.json beside a predictions.csv with rows). Empty when nothing
    was predicted yet (then any number of processes may start)."""
    worlds = {world for _, world, folder in _part_folders(outdir) if has_rows(folder / "predictions.csv")}
    if outdir.path("run.json").is_file() and has_rows(outdir.path("predictions.csv")):
        worlds.add(1)
    return worlds


def check_world(outdir: OutputDir, world_size: int) -> None:
    """Refuse to resume OUT with another number of processes than the run that wrote it."""
    other = sorted(recorded_worlds(outdir) - {world_size})
    if not other:
        return

    def how(n: int) -> str:
        return "one process (no torchrun)" if n == 1 else f"{n} processes (OUT/{PARTS}/rank-*-of-{n})"

    now = "one process" if world_size == 1 else f"{world_size} processes"
    again = ("run the same command without torchrun" if other[0] == 1 else
             f"relaunch torchrun with {other[0]} processes in all (--nnodes x --nproc_per_node)")
    raise AgripatchError(f"{outdir.root} holds predictions written by {' and '.join(how(n) for n in other)}, but this "
                         f"run has {now}; to resume it, {again}, or use --overwrite to start over")


def clear_parts(outdir: OutputDir) -> None:
    """Remove the files this tool writes in ``OUT/parts/rank-*`` (and the folders once empty), nothing else."""
    for _, _, folder in _part_folders(outdir):
        for name in OWN_FILES:
            (folder / name).unlink(missing_ok=True)
        _remove_if_empty(folder)
    _remove_if_empty(outdir.path(PARTS))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------------------------ between ranks


def settle(ctx: DistContext, group: Any, step: Callable[[], T]) -> T:
    """Run a setup step on every rank; when it raises an AgripatchError on any rank, raise it on every rank.

    Also a barrier: no rank starts the next step before every rank finished this one.
    """
    result, error = None, None
    try:
        result = step()
    except AgripatchError as failure:
        if not ctx.distributed:
            raise
        error = str(failure)
    errors = all_gather_objects(ctx, error, group)
    for rank, message in enumerate(errors):
        if message is not None:
            raise AgripatchError(message if rank == ctx.rank else f"{message} (rank {rank})")
    return result  # type: ignore[return-value]


def agree_thresholds(ctx: DistContext, group: Any, recorded: tuple[Any, Any],
                     calibrate: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """The exit thresholds (and budget calibration) every rank uses, the same on all.

    ``recorded`` is this rank's (thresholds, calibration) from its run.json or its options (thresholds None
    when a budget still has to choose them); ``calibrate`` is called on rank 0 only when no rank knows them.
    """
    known = [item for item in all_gather_objects(ctx, recorded, group) if item[0] is not None]
    if known:
        if any(item[0] != known[0][0] for item in known):
            values = sorted({json.dumps(item[0]) for item in known})
            raise AgripatchError(f"the parts of this run recorded different exit thresholds ({', '.join(values)}); "
                                 "use --overwrite to start over")
        return known[0]
    outcome: tuple[str, Any] = ("ok", (None, None))
    if ctx.is_main:
        try:
            outcome = ("ok", calibrate())
        except AgripatchError as failure:
            outcome = ("error", str(failure))
    kind, value = broadcast_object(ctx, outcome, 0, group)
    if kind == "error":
        raise AgripatchError(value)
    return value


# ------------------------------------------------------------------------------------------- merge


def _jsonl_lines(path: Path) -> Iterable[tuple[str, str]]:
    """(photo path, the line as written) of a JSONL log; a line that does not parse is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            yield record.get("path"), line if line.endswith("\n") else line + "\n"


def merge_parts(outdir: OutputDir, listing: Sequence[str], world_size: int) -> dict[str, int]:
    """Write OUT's predictions.csv, predictions.jsonl and errors.csv from the parts, in listing order.

    Rows are the parts' own (a CSV row read and written again with the same writer, a JSONL line copied),
    so the files equal those of a single process. Returns the counts of rows and errors written.
    """
    names = [text(rel) for rel in listing]
    lines: dict[str, str] = {}
    rows: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    for rank in range(world_size):
        folder = outdir.path(part_name(rank, world_size))
        for path, line in _jsonl_lines(folder / "predictions.jsonl"):
            lines.setdefault(path, line)
        for row in read_csv_rows(folder / "predictions.csv"):
            rows.setdefault(row["path"], row)
        for row in read_csv_rows(folder / "errors.csv"):
            errors.setdefault(row["path"], row["reason"])
    order = [path for path in merge_order(names, rows) if path in lines]
    outdir.write_text("predictions.csv", csv_text(CSV_COLUMNS, ([rows[p][c] for c in CSV_COLUMNS] for p in order)))
    outdir.write_text("predictions.jsonl", "".join(lines[p] for p in order))
    outdir.write_text("errors.csv", csv_text(ERROR_COLUMNS, ([p, errors[p]] for p in merge_order(names, errors))))
    return {"photos": len(order), "errors": len(errors)}


# ---------------------------------------------------------------------------------------- test hook


def kill_hook(rank: int) -> Callable[[int], None] | None:
    """TEST HOOK: with ``AGRIPATCH_TEST_KILL_AFTER_BATCHES="<rank>:<n>"`` in the environment, a function to
    call after each appended batch (with the number of batches so far) that SIGKILLs this process after
    the n-th, as an outside kill would; None otherwise (the normal case)."""
    spec = os.environ.get(KILL_HOOK_ENV, "")
    if not spec:
        return None
    target, _, after = spec.partition(":")
    try:
        target_rank, batches = int(target), int(after)
    except ValueError:
        raise AgripatchError(f"{KILL_HOOK_ENV}={spec!r}: expected '<rank>:<batches>' (a test hook)") from None
    if target_rank != rank:
        return None

    def hook(done: int) -> None:
        if done >= batches:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook
