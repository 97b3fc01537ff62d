"""Speed, accuracy and localisation benchmarks: scripts run from the repository root as `python -m benchmarks.NAME`
(each prints a table and writes JSON under `benchmarks/results/`; see benchmarks/README.md)."""
