"""PNG plots of a study, drawn on matplotlib Figures without pyplot (no global backend, safe in notebooks).

Every function takes the tidy frames of `load.StudyData` and returns a Figure; trials
that did not complete are drawn hollow (their latest evaluation), never left out. A plot
with nothing to show says so in the figure instead of being skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.conventions import FINISHED_STATES, SAMPLER_LABELS, sample_metric_name, standard_error_name
from analysis.intervals import seed_interval, t95
from analysis.tables import pooled_se, sample_counts

SAMPLER_STYLE = {"onestep": ("C0", "o"), "twostep": ("C1", "s"), "direct": ("C2", "D")}
MODEL_BPD = {"test_bpd": ("C2", "baseline p(x)"), "test_bpd_smoothed": ("C0", "smoothed p(x~)"),
             "test_bpd_denoiser": ("C1", "denoiser p(x|x~)"), "bpd_bound": ("k", "bpd_bound (clean x)")}
LINE_STYLES = ("-", "--", ":", "-.")
MAX_GRID_TRIALS = 36     # learning-curve panels per figure
MAX_GRID_COLUMNS = 12    # sigma columns of the sample grid
CLOSE_FRACTION = 0.03    # points nearer than this fraction of both axes' data ranges overlap: they get labels


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _value(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.3")
    ax.set_xticks([]), ax.set_yticks([])


def _split(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    done = trials["state"].isin(FINISHED_STATES)
    return trials[done], trials[~done]


def hue_key(trials: pd.DataFrame, x: str) -> Optional[str]:
    """The other of noise_std / num_mixtures where it varies among smoothed trials: one line per value,
    so that means never pool different configurations."""
    other = {"noise_std": "num_mixtures", "num_mixtures": "noise_std"}.get(x)
    smoothed = trials[trials["kind"] == "smoothed"] if "kind" in trials else trials
    return other if other in trials and smoothed[other].nunique() > 1 else None


def _se_bars(ax, frame: pd.DataFrame, x: str, metric: str, color: str) -> None:
    """Each trial's standard error (`<metric>_se`) as a vertical bar through its point."""
    se = standard_error_name(metric)
    if se in frame and frame[se].notna().any():
        ax.errorbar(frame[x].astype(float), frame[metric], yerr=frame[se].astype(float).fillna(0), fmt="none",
                    ecolor=color, alpha=0.5, capsize=2, lw=1)


def _series_vs(ax, trials: pd.DataFrame, x: str, metric: str, color: str, marker: str, label: str,
               hue: Optional[str] = None) -> bool:
    """Points per trial with their bootstrap standard errors (`<metric>_se`) as thin bars; per x the mean
    over the completed repeats (seeds) with the half-width of its 95% t-interval across seeds as capped bars
    (none below two seeds; one line per `hue` value, up to four; points only beyond); hollow markers for
    trials not completed."""
    if metric not in trials or trials[metric].notna().sum() == 0:
        return False
    done, other = _split(trials[trials[metric].notna()])
    _se_bars(ax, done, x, metric, color)
    _se_bars(ax, other, x, metric, color)
    if len(done):
        groups = list(done.groupby(hue)) if hue else [(None, done)]
        if len(groups) <= len(LINE_STYLES):
            for (value, group), style in zip(groups, LINE_STYLES):
                stats = group.groupby(x)[metric].agg(["mean", t95, "count"]).reset_index().sort_values(x)
                name = f"{label}, {hue}={_value(value)}" if hue else label
                low, high = stats["count"].min(), stats["count"].max()
                seeds = f"n={low}" + (f"–{high}" if high > low else "")
                ax.errorbar(stats[x].astype(float), stats["mean"], yerr=stats["t95"].fillna(0), color=color,
                            marker=marker, ls=style, capsize=3, label=f"{name}: mean ± t95 (seeds, {seeds})")
        ax.scatter(done[x].astype(float), done[metric], color=color, alpha=0.35, s=14,
                   label=f"{label}: per trial ± SE (bootstrap)" if standard_error_name(metric) in done else
                   None if len(groups) <= len(LINE_STYLES) else f"{label} (per trial)")
        names = [_short_name(r) for r in done["run_name"]] if "run_name" in done else [""] * len(done)
        ax.__dict__.setdefault("_points", []).extend(
            zip(done[x].astype(float), done[metric].astype(float), names, [color] * len(done)))
    if len(other):
        ax.scatter(other[x].astype(float), other[metric], facecolors="none", edgecolors=color, marker=marker, s=40,
                   label=f"{label}: not completed ({', '.join(sorted(other['state'].unique()))})")
    return True


def close_points(x: np.ndarray, y: np.ndarray, fraction: float = CLOSE_FRACTION) -> np.ndarray:
    """True for each point that lies within `fraction` of the data's x range and of its y range of another
    point (a range of 0 counts as 1: on a flat axis only equal values are close)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return np.zeros(len(x), dtype=bool)
    dx = np.abs(x[:, None] - x[None, :]) / (np.ptp(x) or 1.0)
    dy = np.abs(y[:, None] - y[None, :]) / (np.ptp(y) or 1.0)
    close = (dx <= fraction) & (dy <= fraction)
    np.fill_diagonal(close, False)
    return close.any(axis=1)


def _short_name(run_name) -> str:
    """The trial's number of a run name (`#4 smoothed s=0.48 K=5` -> `#4`), else the name."""
    text = str(run_name)
    return text.split(" ", 1)[0] if text.startswith("#") else text


def label_close(ax) -> None:
    """Label the completed-trial points of an axes (collected by _series_vs, every series together) that are
    too close to tell apart with their trial and x value (`#4 0.4814`), alternately above and below."""
    points = ax.__dict__.pop("_points", [])
    if not points:
        return
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    for i, idx in enumerate(np.flatnonzero(close_points(x, y))):
        name, color = points[idx][2], points[idx][3]
        ax.annotate(f"{name} {x[idx]:.4g}".strip(), (x[idx], y[idx]), fontsize=6, color=color,
                    textcoords="offset points", xytext=(4, 6 if i % 2 == 0 else -10))


def _baseline_line(ax, trials: pd.DataFrame, metric: str, label: str) -> bool:
    base = trials[(trials["kind"] == "baseline") & trials["state"].isin(FINISHED_STATES)]
    values = base[metric].dropna() if metric in base else pd.Series(dtype=float)
    if values.empty:
        return False
    interval, se = seed_interval(values), pooled_se(base, metric)
    bands = ([f"light band ± t95 {interval.half_width:.3g} (seeds)"] if np.isfinite(interval.half_width) else []) \
        + ([f"dark band ± SE {se:.3g} (bootstrap)"] if np.isfinite(se) else [])
    ax.axhline(interval.mean, color="k", ls="--", lw=1.2,
               label=f"{label} (n={interval.n}" + "".join(f"; {b}" for b in bands) + ")")
    if np.isfinite(se) and se > 0:
        ax.axhspan(interval.mean - se, interval.mean + se, color="k", alpha=0.12)
    if np.isfinite(interval.half_width) and interval.half_width > 0:
        ax.axhspan(interval.low, interval.high, color="k", alpha=0.05)
    return True


def distance_vs(trials: pd.DataFrame, extractor: str, x: str = "noise_std") -> Figure:
    """Sample distance and score against `x`: one-step and two-step of smoothed trials, the
    baseline's direct samples as a horizontal line (noise_std) or as its own series (other x)."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    smoothed, hue = trials[trials["kind"] == "smoothed"], hue_key(trials, x)
    for ax, family, better in zip(axes, ("distance", "score"), ("lower", "higher")):
        drawn = False
        for sampler in ("onestep", "twostep"):
            color, marker = SAMPLER_STYLE[sampler]
            drawn |= _series_vs(ax, smoothed, x, sample_metric_name(family, extractor, sampler), color, marker,
                                SAMPLER_LABELS[sampler], hue)
        direct = sample_metric_name(family, extractor, "direct")
        if x == "noise_std":
            drawn |= _baseline_line(ax, trials, direct, "σ = 0 baseline (direct)")
        else:
            color, marker = SAMPLER_STYLE["direct"]
            drawn |= _series_vs(ax, trials[trials["kind"] == "baseline"], x, direct, color, marker, "baseline (direct)")
        name = sample_metric_name(family, extractor)
        if not drawn:
            _empty(ax, f"no {name}_* values yet")
            continue
        ax.set_xlabel({"noise_std": "noise_std σ ([-1, 1] scale)", "num_mixtures": "num_mixtures K"}.get(x, x))
        ax.set_ylabel(f"{name} ({better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        label_close(ax)
    fig.suptitle(f"Sample quality in the feature space of `{extractor}` vs {x} ({sample_counts(trials)} generated "
                 "samples per point; capped bars on means: ± t95 across seeds; thin bars on trials: ± SE bootstrap)")
    return fig


def bpd_vs_sigma(trials: pd.DataFrame) -> Figure:
    """Left: bits/dim of clean test data (two-step bound; the baseline's exact value as a line).
    Right: what each model of a smoothed trial reaches on its own data."""
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    smoothed, hue = trials[trials["kind"] == "smoothed"], hue_key(trials, "noise_std")
    drawn = _series_vs(left, smoothed, "noise_std", "bpd_bound", "C1", "s", "two-step bound", hue)
    drawn |= _baseline_line(left, trials, "test_bpd", "σ = 0 baseline test_bpd (exact)")
    if drawn:
        left.set(xlabel="noise_std σ", ylabel="bits/dim of clean test data (lower is better)")
        left.legend(fontsize=7), left.grid(alpha=0.3), label_close(left)
    else:
        _empty(left, "no bpd_bound values yet")
    drawn = False
    for metric in ("test_bpd_smoothed", "test_bpd_denoiser"):
        color, label = MODEL_BPD[metric]
        drawn |= _series_vs(right, smoothed, "noise_std", metric, color, "o", f"{metric}: {label}", hue)
    if drawn:
        right.set(xlabel="noise_std σ", ylabel="bits/dim")
        right.legend(fontsize=7), right.grid(alpha=0.3), label_close(right)
    else:
        _empty(right, "no smoothed trials with bits/dim yet")
    fig.suptitle("Bits/dim vs σ")
    return fig


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as low in both and lower in one (both minimized)."""
    points = np.column_stack([x, y])
    mask = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        dominated = np.all(points <= p, axis=1) & np.any(points < p, axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto(trials: pd.DataFrame, extractor: str) -> Figure:
    """Product-sample distance (two-step or direct) against the clean-data bits/dim bound."""
    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.subplots()
    distance = sample_metric_name("distance", extractor)
    have = trials.iloc[0:0]
    if distance in trials and "bpd_bound" in trials:
        have = trials[trials[distance].notna() & trials["bpd_bound"].notna()]
    if have.empty:
        _empty(ax, f"no trial has both {distance} and bpd_bound yet")
        return fig
    done, other = _split(have)
    if standard_error_name(distance) in have:
        ax.errorbar(have["bpd_bound"], have[distance], yerr=have[standard_error_name(distance)].astype(float).fillna(0),
                    fmt="none", ecolor="0.55", capsize=2, lw=1, zorder=2)
    if len(done):
        points = ax.scatter(done["bpd_bound"], done[distance], c=done["noise_std"].astype(float), cmap="viridis",
                            s=36, zorder=3, label="completed")
        fig.colorbar(points, ax=ax, label="noise_std σ")
        front = done[pareto_mask(done["bpd_bound"].to_numpy(float), done[distance].to_numpy(float))]
        front = front.sort_values("bpd_bound")
        ax.step(front["bpd_bound"], front[distance], where="post", color="C3", lw=1.5, label="Pareto front")
        ax.scatter(front["bpd_bound"], front[distance], facecolors="none", edgecolors="C3", s=90, lw=1.5, zorder=4)
        for _, row in front.iterrows():
            ax.annotate(row["run_name"], (row["bpd_bound"], row[distance]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        base = done[done["kind"] == "baseline"]
        ax.scatter(base["bpd_bound"], base[distance], marker="*", s=160, facecolors="none", edgecolors="k",
                   label="σ = 0 baseline", zorder=4)
    if len(other):
        ax.scatter(other["bpd_bound"], other[distance], facecolors="none", edgecolors="0.4", s=36,
                   label="not completed (latest)")
    ax.set(xlabel="bpd_bound (bits/dim of clean test data)",
           ylabel=f"{distance} ± SE (product samples, n={sample_counts(have)})")
    ax.set_title("Sample quality vs likelihood (both lower is better)")
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
    return fig


def learning_curves(epochs: pd.DataFrame, trials: pd.DataFrame, extractor: Optional[str]) -> list[Figure]:
    """One panel per trial: train (dashed) and test bits/dim of each model and the bound, the
    product-sample distance on a second axis; the title says the trial's state."""
    if trials.empty:
        fig = Figure(figsize=(5, 3))
        _empty(fig.subplots(), "no trials yet")
        return [fig]
    figures = []
    for start in range(0, len(trials), MAX_GRID_TRIALS):
        page = trials.iloc[start: start + MAX_GRID_TRIALS]
        cols = min(4, len(page))
        rows = int(np.ceil(len(page) / cols))
        fig = Figure(figsize=(4.2 * cols, 3.1 * rows))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, (_, trial) in zip(axes, page.iterrows()):
            _trial_panel(ax, epochs[epochs["trial_id"] == trial["trial_id"]] if len(epochs) else epochs, trial,
                         extractor)
        for ax in axes[len(page):]:
            ax.set_axis_off()
        fig.suptitle("Learning curves per trial (dashed: train, solid: test; right axis: product-sample distance "
                     f"of {sample_counts(page)} samples)")
        fig.tight_layout()
        figures.append(fig)
    return figures


def _trial_panel(ax, rows: pd.DataFrame, trial: pd.Series, extractor: Optional[str]) -> None:
    title = f"{trial['run_name']} [{trial['state']}]"
    if rows.empty:
        _empty(ax, "no epoch logged yet")
        ax.set_title(title, fontsize=8)
        return
    for metric, (color, label) in MODEL_BPD.items():
        if metric == "bpd_bound" and trial.get("kind") == "baseline":
            continue  # the baseline's bound is its test_bpd
        if metric in rows and rows[metric].notna().any():
            ax.plot(rows["epoch"], rows[metric], color=color, label=label, lw=1.2, marker="o" if len(rows) < 3 else None,
                    ms=3)
            train = metric.replace("test_", "train_")
            if train != metric and train in rows and rows[train].notna().any():
                ax.plot(rows["epoch"], rows[train], color=color, ls="--", lw=1)
    ax.set_xlabel("epoch", fontsize=7), ax.set_ylabel("bits/dim", fontsize=7)
    ax.tick_params(labelsize=7), ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    distance = sample_metric_name("distance", extractor) if extractor else None
    if distance and distance in rows and rows[distance].notna().any():
        twin = ax.twinx()
        evals = rows[rows[distance].notna()]
        twin.plot(evals["epoch"], evals[distance], color="C3", marker="o", lw=1, ms=3)
        twin.set_ylabel(distance, fontsize=7, color="C3"), twin.tick_params(labelsize=7, colors="C3")
    ax.set_title(title, fontsize=8, color="k" if trial["state"] in FINISHED_STATES else "C3")


def sample_grid(images: pd.DataFrame) -> Figure:
    """Sample grids side by side: one column per configuration (sorted by σ), one row per sampler.

    `images`: columns label, noise_std, num_mixtures, sampler, epoch, state, path (report.fetch_sample_images).
    """
    import matplotlib.image as mpimg

    if images.empty:
        fig = Figure(figsize=(5, 3))
        _empty(fig.subplots(), "no sample grids logged yet (samples/*.png artifacts)")
        return fig
    columns = images.drop_duplicates("label").sort_values(["noise_std", "num_mixtures", "label"])["label"].tolist()
    if len(columns) > MAX_GRID_COLUMNS:  # evenly spaced sigmas, the first and last kept
        keep = np.unique(np.linspace(0, len(columns) - 1, MAX_GRID_COLUMNS).round().astype(int))
        columns = [columns[i] for i in keep]
    samplers = [s for s in ("direct", "onestep", "twostep") if s in set(images["sampler"])]
    fig = Figure(figsize=(2.3 * len(columns), 2.5 * len(samplers) + 0.4))
    axes = fig.subplots(len(samplers), len(columns), squeeze=False)
    for j, label in enumerate(columns):
        for i, sampler in enumerate(samplers):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            match = images[(images["label"] == label) & (images["sampler"] == sampler)]
            if match.empty:
                ax.set_axis_off()
                continue
            row = match.iloc[0]
            ax.imshow(mpimg.imread(row["path"]), cmap="gray", interpolation="nearest")
            state = "" if row["state"] in FINISHED_STATES else f" [{row['state']}]"
            ax.set_title(f"{label}\n{SAMPLER_LABELS[sampler]}, epoch {int(row['epoch'])}{state}", fontsize=7)
    fig.suptitle("Samples per σ (latest evaluation of one trial per configuration)")
    fig.tight_layout()
    return fig


def time_bars(table: pd.DataFrame) -> Figure:
    """Training hours per 100 epochs and generation hours per 2000 images per dataset and kind."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    if table.empty:
        for ax in axes:
            _empty(ax, "no timings logged yet")
        return fig
    labels = [f"{r.dataset}\n{r.kind}\nF={r.nr_filters}" for r in table.itertuples()]
    for ax, column, title in zip(axes, ("train_hours_per_100_epochs", "gen_hours_per_2000_images"),
                                 ("training hours per 100 epochs", "generation hours per 2000 images")):
        ax.bar(labels, table[column].astype(float), yerr=table[f"{column}:std"].astype(float).fillna(0),
               color=["C2" if k == "baseline" else "C1" for k in table["kind"]], capsize=3)
        ax.set_title(title), ax.tick_params(labelsize=7), ax.grid(alpha=0.3, axis="y")
    return fig


def importance_bars(table: pd.DataFrame, objective: str) -> Figure:
    """Optuna fANOVA importance per searched parameter (analysis.importance.importance_table)."""
    fig = Figure(figsize=(6.5, 0.6 * max(2, len(table)) + 1.2))
    ax = fig.subplots()
    ordered = table.sort_values("importance")
    ax.barh(ordered["parameter"], ordered["importance"], color="C0")
    for y, value in enumerate(ordered["importance"]):
        ax.annotate(f"{value:.2f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, 1.1), ax.grid(alpha=0.3, axis="x")
    n = int(table["n_trials"].iloc[0]) if len(table) else 0
    ax.set(xlabel=f"fraction of the variance of {objective} (fANOVA, {n} completed trials)")
    ax.set_title("Hyperparameter importance")
    return fig
