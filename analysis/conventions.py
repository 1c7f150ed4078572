"""The names analysis reads by: MLflow tags and files of a study, and the metric vocabulary.

Analysis never imports `study` or `trainables` (../shared/DESIGN.md), so the few tag and
file constants it shares with them are restated here; tests/analysis/test_conventions.py
checks each against its source (study/tracking.py, study/storage.py, study/cli.py) so
that a rename there fails a test here. Sample-quality metric names are not restated:
they come from `search_spaces.metric_names`, as in study and trainables.
"""
from __future__ import annotations

import re
from typing import Iterable

from search_spaces.config_groups import GROUP_HASH_CHARS, GROUP_TAG, LABEL_TAG, config_group  # noqa: F401  (re-exported)
from search_spaces.metric_names import (  # noqa: F401  (re-exported for the analysis modules)
    DIAGNOSTICS, PRODUCT_SAMPLER, SAMPLERS, SE_SUFFIX, SampleMetric, parse_sample_metric, sample_metric_name,
    standard_error_name, standard_error_of,
)

# study/tracking.py: tags of the runs of a study's experiment
ROLE_TAG = "run_role"           # "trial" | "summary" (study); "analysis" (a report of a study still running)
TRIAL_ROLE, SUMMARY_ROLE, REPORT_ROLE = "trial", "summary", "analysis"
TRIAL_ID_TAG = "ray_trial_id"   # the Ray Tune trial id
STATE_TAG = "state"             # running | completed | pruned | errored | interrupted
STATES = ("completed", "pruned", "errored", "interrupted", "running")  # display order
FINISHED_STATES = ("completed",)  # trials whose final numbers enter aggregates

# study/storage.py and study/cli.py: where a study lives by default
DEFAULT_STORAGE_PATH = "~/smoothing-studies"
STUDY_FILE = "study.json"
MLFLOW_DB = "mlflow.db"

# Samples logged by the tracker: samples/samples_<sampler>_epoch<EEEE>.png
SAMPLES_ARTIFACT_DIR = "samples"
SAMPLE_PNG = re.compile(r"^samples_(?P<sampler>[a-z]+)_epoch(?P<epoch>\d+)\.png$")

SAMPLER_LABELS = {"onestep": "one-step", "twostep": "two-step", "direct": "direct", "": "product"}

BPD_METRICS = ("train_bpd", "test_bpd", "train_bpd_smoothed", "test_bpd_smoothed",
               "train_bpd_denoiser", "test_bpd_denoiser", "bpd_bound")
TIME_METRICS = ("images_per_s", "epoch_seconds", "sample_seconds", "bpd_seconds", "feature_seconds",
                "diagnostic_seconds")


FD_BOOTSTRAP_RESAMPLES = 200  # trainables/quality/uncertainty.py: B of the distance's bootstrap standard error
IS_SPLITS = 10                # trainables/quality/evaluate.py: splits of the Inception Score (and its SE)


def sample_metrics(names: Iterable[str]) -> list[SampleMetric]:
    return [m for m in (parse_sample_metric(n) for n in names) if m is not None]


def extractors(names: Iterable[str]) -> list[str]:
    """Feature extractor ids appearing in metric names, in first-seen order."""
    return list(dict.fromkeys(m.extractor for m in sample_metrics(names)))


def metric_order(names: Iterable[str]) -> list[str]:
    """Metrics in reading order: bits/dim, then per extractor distance and score with the
    samplers side by side (one-step, two-step, direct, product, then the diagnostics), each
    followed by its standard error, then timings, then the rest."""
    names = list(dict.fromkeys(names))
    sampler_rank = {s: i for i, s in enumerate((*SAMPLERS, "", *DIAGNOSTICS))}
    extractor_rank = {e: i for i, e in enumerate(extractors(names))}

    def key(name: str):
        base = standard_error_of(name)
        if base is not None:  # a standard error right after its metric
            return (*key(base)[:-1], name)
        if name == "epoch":
            return (0, 0, 0, 0, name)
        if name in BPD_METRICS:
            return (1, BPD_METRICS.index(name), 0, 0, name)
        parsed = parse_sample_metric(name)
        if parsed is not None:
            family = 0 if parsed.family == "distance" else 1
            return (2, extractor_rank[parsed.extractor], family, sampler_rank[parsed.sampler], name)
        if name in TIME_METRICS:
            return (3, TIME_METRICS.index(name), 0, 0, name)
        return (4, 0, 0, 0, name)

    return sorted(names, key=key)


# A trial's configuration group (`--repeats` runs several seeds of one), tagged on every trial run; for
# runs of older studies load.py recomputes it from the params: search_spaces/config_groups.py.
