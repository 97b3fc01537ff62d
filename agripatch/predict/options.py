"""What `agripatch predict folder` is asked, one field per CLI flag, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agripatch.errors import AgripatchError
from agripatch.pipeline.config import PREDICT_BATCH_SIZE
from agripatch.pipeline.exits import ExitPolicy
from agripatch.device import check_precision
from agripatch.predict.backend import check_backend

__all__ = ["PredictOptions"]


@dataclass
class PredictOptions:
    """What `agripatch predict folder` is asked (the CLI flags, one field each)."""

    input: Path
    model: Path
    out: Path
    recursive: bool = False
    topk: int = 3
    thresholds: list[float] | None = None
    budget: float | None = None
    batch_size: int = PREDICT_BATCH_SIZE
    workers: int | None = None  # None: device.decoding_workers (0 on a CPU with 2 cores or fewer, else 2)
    device: str = "auto"
    overwrite: bool = False
    quiet: bool = False
    crops: bool = True
    overlays: bool = True
    backend: str = "torch"  # or "onnxruntime": --model is then an `agripatch export` folder
    int8: bool = False  # onnxruntime only: the export folder's int8 graphs
    # photos whose crops and overlays are encoded at once; None: device.evidence_writers (1 on CPU). Several are
    # spawned processes, so a script that calls run_predict_folder needs the `if __name__ == "__main__":` guard.
    writers: int | None = None
    severity: bool | None = None  # True: measure severity (the package's symptom map if the model has none); None: as the model says
    precision: str = "auto"  # torch backend: the networks' dtype (auto: bf16 on CPUs with AMX, else float32)

    def check(self) -> None:
        """Refuse impossible options with a message naming the flag."""
        if self.topk < 1:
            raise AgripatchError(f"--topk must be >= 1, got {self.topk}")
        if self.batch_size < 1:
            raise AgripatchError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise AgripatchError(f"--workers must be >= 0, got {self.workers}")
        if self.writers is not None and self.writers < 1:
            raise AgripatchError(f"--writers must be >= 1 (or left out: chosen from the device), got {self.writers}")
        check_backend(self.backend, self.int8)
        check_precision(self.precision, self.backend)
        self.policy([0.0])  # contradictory or invalid exit options fail before anything is written

    def policy(self, stored: list[float]) -> ExitPolicy:
        """The exit policy the options ask for; the model file's thresholds (``stored``) when none."""
        return ExitPolicy.from_options(self.thresholds, self.budget, stored)
