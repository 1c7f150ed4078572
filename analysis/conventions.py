"""The names analysis reads by: MLflow tags and files of a study, and the metric vocabulary.

Analysis never imports `study` or `trainables` (../shared/DESIGN.md), so the few
constants it shares with them are restated here; tests/analysis/test_conventions.py
checks each against its source (study/tracking.py, study/storage.py, study/cli.py,
trainables/quality/extractors.py) so that a rename there fails a test here.
Metric names follow docs/architecture.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

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

SAMPLERS = ("onestep", "twostep", "direct")  # order of columns and rows; "" = the product samples
SAMPLER_LABELS = {"onestep": "one-step", "twostep": "two-step", "direct": "direct", "": "product"}
PRODUCT_SAMPLER = {"baseline": "direct", "smoothed": "twostep"}  # what `fd_E`/`is_E` repeat per kind

BPD_METRICS = ("train_bpd", "test_bpd", "train_bpd_smoothed", "test_bpd_smoothed",
               "train_bpd_denoiser", "test_bpd_denoiser", "bpd_bound")
TIME_METRICS = ("images_per_s", "epoch_seconds", "sample_seconds", "bpd_seconds", "feature_seconds")


@dataclass(frozen=True)
class SampleMetric:
    """A parsed sample-quality metric name: `fd_<E>[_<S>]`, `fid_inception[_<S>]`, `is_<E>[_<S>]`."""
    family: str      # "distance" | "score"
    extractor: str   # feature extractor id, e.g. digits_cnn, inception
    sampler: str     # onestep | twostep | direct | "" (the trial's product samples)

    @property
    def name(self) -> str:
        return sample_metric_name(self.family, self.extractor, self.sampler)


def sample_metric_name(family: str, extractor: str, sampler: str = "") -> str:
    """The metric name of (family, extractor, sampler), as trainables.quality.extractors.metric_names."""
    if family == "distance":
        base = "fid_inception" if extractor == "inception" else f"fd_{extractor}"
    elif family == "score":
        base = f"is_{extractor}"
    else:
        raise ValueError(f"family must be distance or score, got {family!r}")
    return f"{base}_{sampler}" if sampler else base


def parse_sample_metric(name: str) -> Optional[SampleMetric]:
    """SampleMetric of a sample-quality metric name; None for any other name (and for `is_*_std`)."""
    if name.startswith("fid_inception"):
        family, rest = "distance", "inception" + name[len("fid_inception"):]
    elif name.startswith("fd_"):
        family, rest = "distance", name[3:]
    elif name.startswith("is_"):
        family, rest = "score", name[3:]
    else:
        return None
    if rest.endswith("_std") or not rest:
        return None
    sampler = ""
    for candidate in SAMPLERS:
        if rest.endswith(f"_{candidate}"):
            sampler, rest = candidate, rest[: -len(candidate) - 1]
            break
    if family == "distance" and rest == "inception" and not name.startswith("fid_"):
        return None  # `fd_inception` is not a name: Inception distances are `fid_inception`
    return SampleMetric(family, rest, sampler) if rest else None


def sample_metrics(names: Iterable[str]) -> list[SampleMetric]:
    return [m for m in (parse_sample_metric(n) for n in names) if m is not None]


def extractors(names: Iterable[str]) -> list[str]:
    """Feature extractor ids appearing in metric names, in first-seen order."""
    return list(dict.fromkeys(m.extractor for m in sample_metrics(names)))


def metric_order(names: Iterable[str]) -> list[str]:
    """Metrics in reading order: bits/dim, then per extractor distance and score with the
    samplers side by side (one-step, two-step, direct, product), then timings, then the rest."""
    names = list(dict.fromkeys(names))
    sampler_rank = {s: i for i, s in enumerate((*SAMPLERS, ""))}
    extractor_rank = {e: i for i, e in enumerate(extractors(names))}

    def key(name: str):
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
