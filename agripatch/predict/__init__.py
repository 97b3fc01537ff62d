"""agripatch.predict: diagnose a folder of photos and write a reviewable, resumable record of it."""

from __future__ import annotations

from agripatch.predict.folder import PredictSummary, run_predict_folder

__all__ = ["PredictSummary", "run_predict_folder"]
