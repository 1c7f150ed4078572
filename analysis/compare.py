"""`python -m analysis.report --study A --study B`: studies side by side in one report.

For example the same sweep on two datasets, or before and after a change. The trend
tables group the union of the studies' trials by `study` first, then by every
hyperparameter that varies (tables.repeat_keys), so a study's rows stay together and
repeats never pool across studies. The distance-vs-sigma plot has one line per study
(two-step samples; the study's sigma = 0 baseline as a dashed line of the same colour),
one panel per feature extractor: numbers of different extractors share no axis.

Written to --out (default `analysis-compare-A-vs-B`): report.md, report.html, tables/
(trials of all studies with a `study` column, trend tables), plots/. Not logged to MLflow:
a comparison belongs to no single study's summary run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots, render, tables
from analysis.conventions import BPD_METRICS, FINISHED_STATES, sample_metric_name
from analysis.load import AnalysisError, StudyData, extractor_shas
from analysis.render import Block, Image, trend_view
from analysis.intervals import SINGLE_SEED_NOTE
from analysis.sections import UNCERTAINTY_NOTE, sample_columns, state_counts

STUDY_KEY = "study"
TREND_KEYS = ("noise_std", "num_mixtures")


def default_out(studies: Sequence[str]) -> Path:
    return Path("analysis-compare-" + "-vs-".join(studies))


def combined_trials(datas: Sequence[StudyData]) -> pd.DataFrame:
    """Every study's trials in one frame with a `study` column, which counts as a hyperparameter."""
    trials = pd.concat([d.trials.assign(**{STUDY_KEY: d.study}) for d in datas], ignore_index=True, sort=False)
    params = dict.fromkeys(p for d in datas for p in d.trials.attrs.get("params", []))
    trials.attrs["params"] = [STUDY_KEY, *params]
    return trials


def compare_trend(datas: Sequence[StudyData], by: str) -> pd.DataFrame:
    """tables.trend_table of the union, its rows indexed by study first."""
    trials = combined_trials(datas)
    if trials.empty or by not in trials:
        return tables.trend_table(trials.iloc[0:0], by) if trials.empty else pd.DataFrame()
    table = tables.trend_table(trials, by)
    keys = list(table.index.names)
    if STUDY_KEY in keys:
        table = table.reorder_levels([STUDY_KEY, *(k for k in keys if k != STUDY_KEY)]).sort_index()
    return table


def extractor_of(data: StudyData) -> str:
    return data.extractor or "unknown"


def distance_vs_sigma(datas: Sequence[StudyData]) -> Figure:
    """Two-step distance vs noise_std, one line (mean ± t95 across seeds) per study, one panel per extractor."""
    panels = list(dict.fromkeys(extractor_of(d) for d in datas))
    fig = Figure(figsize=(6 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, extractor in zip(axes, panels):
        drawn = False
        for i, data in enumerate(datas):
            if extractor_of(data) != extractor:
                continue
            color, trials = f"C{i}", data.trials
            smoothed = trials[trials["kind"] == "smoothed"] if len(trials) else trials
            metric = sample_metric_name("distance", extractor, "twostep")
            drawn |= plots._series_vs(ax, smoothed, "noise_std", metric, color, "s", f"{data.study} two-step",
                                      plots.hue_key(trials, "noise_std") if len(trials) else None)
            drawn |= _baseline(ax, trials, sample_metric_name("distance", extractor, "direct"), color, data.study)
        if not drawn:
            plots._empty(ax, f"no {sample_metric_name('distance', extractor)} values yet")
            continue
        ax.set_xlabel("noise_std σ ([-1, 1] scale)")
        ax.set_ylabel(f"{sample_metric_name('distance', extractor)} (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Two-step sample distance vs σ, per study (dashed: the study's σ = 0 baseline)")
    return fig


def _baseline(ax, trials: pd.DataFrame, metric: str, color: str, study: str) -> bool:
    if trials.empty or metric not in trials:
        return False
    values = trials.loc[(trials["kind"] == "baseline") & trials["state"].isin(FINISHED_STATES), metric].dropna()
    if values.empty:
        return False
    ax.axhline(values.mean(), color=color, ls="--", lw=1.2, label=f"{study} σ = 0 baseline (n={len(values)})")
    return True


def comparison_blocks(datas: Sequence[StudyData], trends: dict[str, pd.DataFrame], plot: Path, root: Path,
                      files: list[Path]) -> list[Block]:
    extractors = list(dict.fromkeys(extractor_of(d) for d in datas))
    blocks: list[Block] = [("h1", "Studies " + " vs ".join(f"`{d.study}`" for d in datas))]
    for d in datas:
        tags = d.experiment_tags
        blocks.append(("p", f"`{d.study}`: space `{tags.get('space', '?')}` on `{tags.get('dataset', '?')}`, "
                            f"objective `{tags.get('objective', '?')}`, extractor `{extractor_of(d)}`; "
                            f"{len(d.trials)} trials ({state_counts(d.trials) if len(d.trials) else 'none yet'}); "
                            f"MLflow `{d.mlflow_uri}`."))
    if len(extractors) > 1:
        blocks.append(("p", "The studies use different feature extractors (" + ", ".join(f"`{e}`" for e in extractors)
                            + "): their distances are in different columns and panels, never compared."))
    for by, trend in trends.items():
        blocks += [("h2", f"Trends vs {by}"),
                   ("p", f"Rows: study, then every hyperparameter that varies except `seed`, sorted by `{by}`; "
                         "n = completed trials. " + UNCERTAINTY_NOTE)]
        if trend.empty:
            blocks.append(("p", "_(no trials yet)_"))
            continue
        blocks += [trend_view(trend, sample_columns(extractors)), trend_view(trend, list(BPD_METRICS))]
        if not (trend[tables.TRIALS_N] >= 2).any():
            blocks.append(("p", SINGLE_SEED_NOTE))
        if by == "noise_std":
            blocks.append(Image(str(plot.relative_to(root)), "two-step distance vs σ, one line per study"))
    blocks += [("h2", "Files"), ("p", "Tables (Parquet and CSV): " + ", ".join(
        f"`{p.relative_to(root)}`" for p in files) + ".")]
    return blocks


def check_same_networks(datas: Sequence[StudyData]) -> None:
    """Refuse studies that report one extractor id from different networks (extractor_sha tags): their
    distances would share a column and a panel. Studies from before the tag are not checked."""
    seen: dict[str, tuple[str, str]] = {}  # extractor id -> (study, extractor_sha) of the first study with it
    for data in datas:
        for sha in extractor_shas(data.trials):  # load_trials allows one per study
            first = seen.setdefault(extractor_of(data), (data.study, sha))
            if first[1] != sha:
                raise AnalysisError(f"studies {first[0]!r} and {data.study!r} both report "
                                    f"{sample_metric_name('distance', extractor_of(data))} but from different "
                                    f"{extractor_of(data)} networks (extractor_sha {first[1]} vs {sha}: trained "
                                    f"on other data or hardware); their distances are not comparable")


def write_comparison(datas: Sequence[StudyData], out: Path) -> Path:
    """Tables, the plot, report.md and report.html under `out`; returns report.md's path."""
    names = [d.study for d in datas]
    if len(set(names)) != len(names):
        raise AnalysisError(f"--study names a study twice: {', '.join(names)}")
    check_same_networks(datas)
    from analysis.report import PLOTS_DIR, REPORT_HTML, REPORT_MD, TABLES_DIR, export_tables

    out.mkdir(parents=True, exist_ok=True)
    trends = {by: compare_trend(datas, by) for by in TREND_KEYS}
    named = {"trials": combined_trials(datas), **{f"trend_{by}": t for by, t in trends.items() if not t.empty}}
    files = export_tables(named, out / TABLES_DIR)
    plot = plots.save(distance_vs_sigma(datas), out / PLOTS_DIR / "distance_vs_sigma.png")
    blocks = comparison_blocks(datas, trends, plot, out, files)
    (out / REPORT_MD).write_text(render.to_markdown(blocks))
    (out / REPORT_HTML).write_text(render.to_html(blocks, out, "Studies " + " vs ".join(names)))
    return out / REPORT_MD
