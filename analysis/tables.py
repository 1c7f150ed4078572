"""Trend tables, the paper's table and the time table, from `load.StudyData` frames.

Aggregates (mean, sample std with ddof=1, n) are over *repeats*: trials whose
hyperparameters agree on every key that varies in the study except `seed`. Only
trials in `states` (default: completed) enter them; every other trial of a group is
counted in its `not_included` note ("1 pruned, 1 running"), never silently dropped.

Every metric also gets `t95`: the half-width of the 95% t-interval of its mean across the
repeats (seeds), t_{0.975, n-1} * std / sqrt(n), NaN below two (analysis/intervals.py).
A metric with standard errors (a sample-quality metric, or any metric logged with a
`<metric>_se` companion) also gets `se`: the standard error of the mean that comes from
the finite sample count alone, sqrt(sum_i se_i^2) / n over the n repeats' logged
standard errors (the bootstrap / split SE of each trial; NaN where a trial logged none).
`std` and `t95` are the spread over repeats (seeds), which also holds training noise.

A continuous searched hyperparameter never repeats exactly (TPE proposes sigma 0.4814 and
0.4842): with `bins` its values are grouped into stated bins (`Bin`, e.g. [0.45, 0.5)) so
that mean, std and n are over trials that differ by rounding only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from analysis.conventions import (
    BPD_METRICS, FINISHED_STATES, PRODUCT_SAMPLER, SAMPLERS, STATES, TIME_METRICS, metric_order,
    parse_sample_metric, sample_metric_name, sample_metrics, standard_error_name, standard_error_of,
)
from analysis.intervals import mean_se, seed_interval
from analysis.load import GROUP_TAGS, TRIAL_TAGS
from search_spaces.config_groups import NOT_GROUPED  # what makes trials repeats of one configuration

TRIALS_NOTE = ("trials", "not_included")
TRIALS_N = ("trials", "n")
TRIALS_CONFIGS = ("trials", "configs")  # distinct config_group among them: > 1 where a bin pools configurations
KEY_ORDER = ("kind", "noise_std", "num_mixtures")


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The hyperparameter columns: as recorded by load_trials, else everything that is not a metric or trial info."""
    if trials.attrs.get("params"):
        return [c for c in trials.attrs["params"] if c in trials.columns]
    info = {"trial_id", "run_id", "run_name", "status", "state", "pruned", "epochs", "start_time", "end_time",
            "last_update", *TRIAL_TAGS, *GROUP_TAGS} - {"kind", "dataset", "extractor"}
    return [c for c in trials.columns if c not in info and not is_metric(c)]


def is_metric(name: str) -> bool:
    return (name in BPD_METRICS or name in TIME_METRICS or parse_sample_metric(name) is not None
            or standard_error_of(name) is not None)


def pooled_se(frame: pd.DataFrame, metric: str) -> float:
    """Sample-count standard error of the mean of `metric` over the rows that have it:
    sqrt(sum se_i^2) / n; NaN when a row lacks its `<metric>_se` or nothing is there."""
    se = standard_error_name(metric)
    if metric not in frame or se not in frame:
        return np.nan
    return mean_se(frame[metric].astype(float), frame[se].astype(float))


def has_standard_error(frame: pd.DataFrame, metric: str) -> bool:
    """A sample-quality metric (its SE may be missing in older studies: NaN), or any metric logged with an SE."""
    return parse_sample_metric(metric) is not None or standard_error_name(metric) in frame


def sample_counts(frame: pd.DataFrame) -> str:
    """The generated images behind each distance (`num_eval_samples`), e.g. "200" or "100, 200"; "?" if unknown."""
    if "num_eval_samples" not in frame or frame["num_eval_samples"].dropna().empty:
        return "?"
    return ", ".join(str(int(v)) for v in sorted(frame["num_eval_samples"].dropna().unique()))


def repeat_keys(trials: pd.DataFrame, by: Optional[str] = None) -> list[str]:
    """`by`, then every other hyperparameter that varies across the study's trials except the seed."""
    varying = [c for c in param_columns(trials)
               if c not in NOT_GROUPED and trials[c].astype(str).nunique(dropna=False) > 1]
    ordered = [k for k in KEY_ORDER if k in varying] + sorted(k for k in varying if k not in KEY_ORDER)
    keys = ["kind"] if "kind" in trials.columns else []
    if by is not None:
        keys.append(by)
    return keys + [k for k in ordered if k not in keys]


@dataclass(frozen=True, order=True)
class Bin:
    """[lo, hi) of a binned hyperparameter; lo == hi: a value outside the searched domain, kept exact
    (the sigma = 0 baseline)."""
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.lo:.4g}" if self.lo == self.hi else f"[{self.lo:.3g}, {self.hi:.3g})"


def searched_bins(searched: dict) -> dict[str, tuple[float, float, float, bool]]:
    """key -> (low, high, width, log) for every continuous (float) searched key of study.json's `searched`.

    Width: half the power of ten below the domain's span (in decades where log), e.g.
    [0.1, 0.8] -> 0.05 (14 bins), [1e-4, 1e-2] log -> half a decade."""
    out = {}
    for key, domain in (searched or {}).items():
        if domain.get("type") != "float":
            continue
        low, high, log = float(domain["low"]), float(domain["high"]), bool(domain.get("log"))
        span = math.log10(high / low) if log else high - low
        out[key] = (low, high, 10 ** math.floor(math.log10(span)) / 2, log)
    return out


def to_bin(value: float, low: float, high: float, width: float, log: bool) -> Bin:
    """The bin of `value` on the grid low, low + width, ... (in log10 where log); high is in the last bin."""
    if value is None or pd.isna(value) or not low <= value <= high:
        return Bin(value, value)
    to, back = (math.log10, lambda v: 10 ** v) if log else (float, float)
    count = max(1, math.ceil(round((to(high) - to(low)) / width, 9)))
    k = min(math.floor(round((to(value) - to(low)) / width, 9)), count - 1)
    lo, hi = to(low) + k * width, min(to(low) + (k + 1) * width, to(high))
    return Bin(float(f"{back(lo):.10g}"), float(f"{back(hi):.10g}"))


def binned(trials: pd.DataFrame, bins: Optional[dict]) -> pd.DataFrame:
    """The trials with each binned column's values replaced by their Bin (a copy; the columns keep their names)."""
    if not bins:
        return trials
    out = trials.copy()
    for key, (low, high, width, log) in bins.items():
        if key in out:
            out[key] = [to_bin(v, low, high, width, log) for v in out[key].astype(float)]
    return out


def value_metrics(trials: pd.DataFrame) -> list[str]:
    """The metrics aggregated over repeats: the known ones and any column logged with a `<column>_se`
    companion (standard errors enter as their metric's `se`)."""
    with_se = {c for c in trials.columns if standard_error_name(c) in trials.columns}
    errors = {standard_error_name(c) for c in with_se}
    return metric_order(c for c in trials.columns
                        if (is_metric(c) or c in with_se) and standard_error_of(c) is None and c not in errors)


def _note(states: pd.Series, included: Sequence[str]) -> str:
    counts = states[~states.isin(included)].value_counts()
    order = [s for s in STATES if s in counts.index] + sorted(set(counts.index) - set(STATES))
    return ", ".join(f"{counts[s]} {s}" for s in order)


def trend_table(trials: pd.DataFrame, by: str = "noise_std", metrics: Optional[Iterable[str]] = None,
                states: Sequence[str] = FINISHED_STATES, bins: Optional[dict] = None) -> pd.DataFrame:
    """Every metric against `by` (noise_std | num_mixtures | any hyperparameter), over repeats.

    Rows: one per configuration, indexed by repeat_keys(trials, by) and sorted by them; a key
    in `bins` (searched_bins) is indexed by its Bin.
    Columns: (metric, "mean" | "std" | "n" | "t95") in metric_order (one-step next to two-step),
    metrics with standard errors also (metric, "se") (pooled_se), then ("trials", "n") counted
    in the mean, ("trials", "configs") the distinct config_group among them and ("trials", "not_included").
    """
    if trials.empty:
        return pd.DataFrame(columns=pd.MultiIndex.from_tuples([TRIALS_N, TRIALS_CONFIGS, TRIALS_NOTE]))
    if by not in trials.columns:
        raise ValueError(f"no column {by!r} in the trials table; hyperparameters: {param_columns(trials)}")
    metrics = list(metrics) if metrics is not None else value_metrics(trials)
    keys = repeat_keys(trials, by)
    trials = binned(trials, bins)
    rows = {}
    for key, group in trials.groupby(keys, dropna=False, sort=True):
        used = group[group["state"].isin(states)]
        row = {}
        for metric in metrics:
            row[(metric, "mean")], row[(metric, "std")], row[(metric, "t95")] = _mean_std(used, metric)
            row[(metric, "n")] = int(used[metric].notna().sum()) if metric in used else 0
            if has_standard_error(trials, metric):
                row[(metric, "se")] = pooled_se(used, metric)
        row[TRIALS_N] = len(used)
        row[TRIALS_CONFIGS] = used["config_group"].nunique() if "config_group" in used else len(used)
        row[TRIALS_NOTE] = _note(group["state"], states)
        rows[key if isinstance(key, tuple) else (key,)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(list(rows), names=keys)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.sort_index()


def flatten(table: pd.DataFrame) -> pd.DataFrame:
    """A trend table with `metric:stat` columns and the keys as columns (CSV, Parquet)."""
    flat = table.copy()
    flat.columns = [f"{metric}:{stat}" for metric, stat in flat.columns]
    return bins_as_text(flat.reset_index())


def bins_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Bin cells as their text ([0.45, 0.5)): Parquet and CSV take no Python objects."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, Bin)).any():
            out[column] = out[column].map(str)
    return out


# ---------------------------------------------------------------- the paper's table

def config_label(row: pd.Series, keys: Sequence[str], digits: int = 3) -> str:
    """`PixelCNN++ baseline (σ=0, K=5)` / `smoothed (σ=0.481, K=5, lr=0.002)` for a group of repeats."""
    parts = []
    for key in dict.fromkeys(keys):
        if key == "kind" or key not in row:
            continue
        name = {"noise_std": "σ", "num_mixtures": "K"}.get(key, key)
        parts.append(f"{name}={_short(row[key], digits)}")
    kind = row.get("kind", "")
    label = "PixelCNN++ baseline" if kind == "baseline" else f"{kind}"
    return f"{label} ({', '.join(parts)})" if parts else label


def _short(value, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def config_labels(firsts: list[pd.Series], keys: Sequence[str]) -> list[str]:
    """config_label of each group, with as many digits as it takes to tell different groups apart."""
    for digits in range(3, 10):
        labels = [config_label(row, keys, digits) for row in firsts]
        if len(set(labels)) == len(labels):
            break
    return labels


def paper_table(trials: pd.DataFrame, states: Sequence[str] = FINISHED_STATES,
                extractor_ids: Optional[Sequence[str]] = None, bins: Optional[dict] = None) -> pd.DataFrame:
    """Meng et al.'s comparison: per configuration and sampler, IS, distance and bits/dim.

    Rows: the baseline's direct samples; a smoothed configuration's one-step and two-step
    samples. Columns per extractor E (never mixed): `is_E`, `is_E:std`, `is_E:t95`, `is_E:se`,
    `fd_E` (or `fid_inception`), `fd_E:std`, `fd_E:t95`, `fd_E:se` (t95: half-width of the 95%
    t-interval across seeds; se: pooled_se); `bpd`, `bpd:std`, `bpd:t95` with
    `bpd_metric` saying which: the baseline's exact `test_bpd`, the two-step upper bound
    `bpd_bound`, none for one-step (gradient denoising defines no likelihood); `n`;
    `samples` (generated images per distance, sample_counts); `not_included`. Keys in
    `bins` group by their bin (its text in the key column).
    """
    found = list(dict.fromkeys(m.extractor for m in sample_metrics(trials.columns)))
    extractor_ids = list(extractor_ids) if extractor_ids is not None else found
    keys = [k for k in repeat_keys(trials) if k not in NOT_GROUPED]
    rows = []
    if trials.empty:
        return pd.DataFrame(columns=["model", "sampler", "n", "samples", "not_included"])
    trials = binned(trials, bins)
    groups = list(trials.groupby(keys, dropna=False, sort=True))
    labels = config_labels([group.iloc[0] for _, group in groups], ["noise_std", "num_mixtures", *keys])
    for (_, group), label in zip(groups, labels):
        used = group[group["state"].isin(states)]
        first = group.iloc[0]
        kind = first.get("kind", "")
        samplers = [s for s in SAMPLERS if any(sample_metric_name("distance", e, s) in group and
                                                group[sample_metric_name("distance", e, s)].notna().any()
                                                for e in extractor_ids)]
        if not samplers:
            samplers = [PRODUCT_SAMPLER.get(kind, "")]
        for sampler in samplers:
            row = {"model": label, **{k: str(first[k]) if isinstance(first[k], Bin) else first[k] for k in keys},
                   "sampler": sampler, "n": len(used), "samples": sample_counts(used)}
            for e in extractor_ids:
                for family in ("score", "distance"):
                    name, column = sample_metric_name(family, e), sample_metric_name(family, e, sampler)
                    row[name], row[f"{name}:std"], row[f"{name}:t95"] = _mean_std(used, column)
                    row[f"{name}:se"] = pooled_se(used, column)
            bpd_metric = {"direct": "test_bpd", "twostep": "bpd_bound"}.get(sampler, "")
            row["bpd_metric"] = bpd_metric
            row["bpd"], row["bpd:std"], row["bpd:t95"] = _mean_std(used, bpd_metric)
            row["not_included"] = _note(group["state"], states)
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(frame: pd.DataFrame, column: str) -> tuple[float, float, float]:
    """(mean, std, t95) of a column over the frame's rows with a value; NaN where there are none (or < 2)."""
    if not column or column not in frame:
        return np.nan, np.nan, np.nan
    values = frame[column].dropna().astype(float)
    interval = seed_interval(values)
    return interval.mean, (values.std(ddof=1) if len(values) > 1 else np.nan), interval.half_width


# ---------------------------------------------------------------- time

TIME_GROUPS = ("dataset", "kind", "nr_filters", "nr_resnet", "batch_size", "mixed_precision", "compile", "hardware")


EVAL_SPLIT = {"eval_share_sampling": "sample_seconds", "eval_share_bpd": "bpd_seconds",
              "eval_share_features": "feature_seconds"}  # share column -> the metric of that part
EVAL_SHARES = tuple(EVAL_SPLIT)


def _evaluation_shares(rows: pd.DataFrame) -> dict[str, float]:
    """Mean share of sampling, bits/dim and feature extraction in a trial's evaluations."""
    if not set(EVAL_SPLIT.values()) <= set(rows.columns):
        return dict.fromkeys(EVAL_SHARES, np.nan)
    parts = rows[list(EVAL_SPLIT.values())].dropna()
    if parts.empty:
        return dict.fromkeys(EVAL_SHARES, np.nan)
    shares = parts.div(parts.sum(axis=1), axis=0).mean()
    return {share: float(shares[metric]) for share, metric in EVAL_SPLIT.items()}


def time_table(trials: pd.DataFrame, epochs: pd.DataFrame, hardware: str = "") -> pd.DataFrame:
    """Training hours per 100 epochs and generation hours per 2000 images, per dataset and kind.

    Per trial: mean `epoch_seconds` over its logged epochs (all models of the trial: a
    smoothed trial trains p(x~) and its denoiser) and mean `sample_seconds /
    num_eval_samples` over its evaluations (a smoothed trial's evaluation draws x~ and
    the two-step samples; the one-step samples reuse x~). The shares of an evaluation's
    time (`eval_share_sampling`, `_bpd`, `_features`: `sample_seconds`, `bpd_seconds` and
    `feature_seconds` of the evaluation epochs over their sum) are averaged over the
    evaluations that logged all three (NaN for studies from before them). Then mean and std
    over the trials of a group. Every trial with timings counts, whatever its state: an
    epoch's time does not depend on how the trial ended. `hardware` fills the column
    where the runs carry no `hardware` tag.
    """
    per_trial = []
    for _, trial in trials.iterrows():
        rows = epochs[epochs["trial_id"] == trial["trial_id"]] if len(epochs) else epochs
        epoch_s = rows["epoch_seconds"].dropna() if "epoch_seconds" in rows else pd.Series(dtype=float)
        sample_s = rows["sample_seconds"].dropna() if "sample_seconds" in rows else pd.Series(dtype=float)
        if epoch_s.empty and sample_s.empty:
            continue
        n_images = float(trial.get("num_eval_samples", np.nan))
        per_trial.append({
            **{k: trial[k] for k in TIME_GROUPS if k in trial.index and k != "hardware"},
            "hardware": trial["hardware"] if pd.notna(trial.get("hardware")) else hardware,
            "epochs": len(epoch_s), "evaluations": len(sample_s),
            "train_hours_per_100_epochs": epoch_s.mean() * 100 / 3600 if len(epoch_s) else np.nan,
            "images_per_s": rows["images_per_s"].mean() if "images_per_s" in rows else np.nan,
            "gen_hours_per_2000_images": (sample_s / n_images).mean() * 2000 / 3600 if len(sample_s) else np.nan,
            **_evaluation_shares(rows),
        })
    keys = [k for k in TIME_GROUPS if k in trials.columns or k == "hardware"]  # older studies lack some keys
    columns = [*keys, "trials", "epochs", "evaluations", "train_hours_per_100_epochs",
               "train_hours_per_100_epochs:std", "images_per_s", "gen_hours_per_2000_images",
               "gen_hours_per_2000_images:std", *EVAL_SHARES]
    if not per_trial:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(per_trial)
    groups = frame.groupby(keys, dropna=False, sort=True)
    out = groups.agg(trials=("epochs", "size"), epochs=("epochs", "sum"), evaluations=("evaluations", "sum"),
                     train_hours_per_100_epochs=("train_hours_per_100_epochs", "mean"),
                     train_std=("train_hours_per_100_epochs", "std"), images_per_s=("images_per_s", "mean"),
                     gen_hours_per_2000_images=("gen_hours_per_2000_images", "mean"),
                     gen_std=("gen_hours_per_2000_images", "std"),
                     **{k: (k, "mean") for k in EVAL_SHARES}).reset_index()
    out = out.rename(columns={"train_std": "train_hours_per_100_epochs:std",
                              "gen_std": "gen_hours_per_2000_images:std"})
    return out[columns]
