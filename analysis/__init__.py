"""Analysis of a study: MLflow (the source of truth) -> tidy tables, trend tables, plots, a report.

From a notebook:
    from analysis import load_trials, trend_table, paper_table
    data = load_trials("noise_sweep-digits")          # also while the study runs
    data.trials, data.epochs                          # one row per trial / per trial and epoch
    trend_table(data.trials, "noise_std")             # mean/std/n/t95/se over repeats (seeds)
    from analysis.report import write_report          # everything, as `python -m analysis.report`

Never imports ray, torch, `trainables` or `study` (tests/test_imports.py).
"""
from analysis.load import AnalysisError, StudyData, load_trials, resolve_mlflow_uri
from analysis.tables import flatten, paper_table, repeat_keys, time_table, trend_table

__all__ = ["AnalysisError", "StudyData", "load_trials", "resolve_mlflow_uri", "flatten", "paper_table",
           "repeat_keys", "time_table", "trend_table"]
