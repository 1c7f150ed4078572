"""The report's sections as blocks (headings, text, tables, images): what a reader sees, in order."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd

from analysis import plots
from analysis.conventions import (
    BPD_METRICS, DIAGNOSTICS, FD_BOOTSTRAP_RESAMPLES, FINISHED_STATES, IS_SPLITS, STATES, sample_metric_name,
    standard_error_name,
)
from analysis.intervals import SINGLE_SEED_NOTE
from analysis.load import StudyData
from analysis.render import (
    Block, Image, Table, fmt, mean_std, paper_view, state_mark, time_view, trend_view, trials_view,
)
from analysis.tables import sample_counts

UNCERTAINTY_NOTE = (
    "Cells read `mean ± T (t95, n=k), SE s`. The mean is over the k completed seeds (repeats) of a "
    "configuration; ± T is the half-width of its 95% t-interval across seeds, t(0.975, k−1)·sd/√k: it covers "
    "seed-to-seed variation (training, the generated samples, the evaluation), none below two seeds. SE is the "
    "standard error of the same mean from the finite number of generated samples (`samples`) alone: for a "
    f"distance, the bootstrap over the samples (B = {FD_BOOTSTRAP_RESAMPLES} resamples with replacement, the "
    f"reference statistics of the real test split fixed); for IS, over its {IS_SPLITS} splits; over k seeds, "
    "sqrt(Σ SE²) / k. Two means whose t-intervals overlap widely are no evidence of a difference; distances of "
    "different sample counts are not comparable (the distance is biased upwards at small counts).")


def sample_columns(extractor_ids: list[str]) -> list[str]:
    """Distance then score, each with one-step, two-step and direct side by side."""
    return [sample_metric_name(family, e, s) for e in extractor_ids for family in ("distance", "score")
            for s in ("onestep", "twostep", "direct")]


def state_counts(trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in [*STATES, *sorted(set(counts.index) - set(STATES))] if s in counts)


def header(data: StudyData) -> list[Block]:
    tags, trials = data.experiment_tags, data.trials
    mode = data.summary_params.get("mode") or ",".join(data.study_config.get("mode", [])) or "?"
    lines = [("h1", f"Study `{data.study}`"),
             ("p", f"Space `{tags.get('space', '?')}` on `{tags.get('dataset', '?')}`; objective "
                   f"`{tags.get('objective', '?')}` ({mode}); feature extractor `{data.extractor or '?'}`. "
                   f"MLflow `{data.mlflow_uri}`, experiment {data.experiment_id}, summary run "
                   f"`{data.summary_run_id or 'none yet'}`. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."),
             ("p", f"**{len(trials)} trials**: {state_counts(trials) if len(trials) else 'none yet'}."),
             ("p", data_settings(trials))]
    if len(trials) and (trials["state"] == "running").any():
        lines.append(("p", "**The study is still running**: aggregates use completed trials only; the trials "
                           "table and the hollow markers in the plots show the others at their latest epoch."))
    return lines


def data_settings(trials: pd.DataFrame) -> str:
    """The images the trials saw: training subset, test cap for bits/dim, image size and data dir
    (each a param of every trial; one fixed seeded choice shared by the whole study)."""
    def shown(key: str, zero: str) -> str:
        if key not in trials.columns or trials[key].isna().all():
            return "not recorded"
        values = sorted({zero if v == 0 else fmt(v) for v in trials[key].dropna()}, key=str)
        return " / ".join(values)

    parts = [f"training images `train_subset` = {shown('train_subset', 'all')}",
             f"test images for bits/dim `max_eval_images` = {shown('max_eval_images', 'all')}"]
    if "image_size" in trials.columns and trials["image_size"].fillna(0).astype(float).any():
        parts.append(f"`image_size` = {shown('image_size', 'default')}")
    if "data_dir" in trials.columns and trials["data_dir"].notna().any():
        parts.append(f"`data_dir` = {shown('data_dir', '')}")
    return "Data: " + "; ".join(parts) + " (subsets: one fixed seeded choice, the same in every trial)."


def held_constant(trials: pd.DataFrame, key: str, searched: Optional[dict] = None) -> Optional[list]:
    """[the value] where the study held `key` constant for its smoothed trials (a plot over it would be one
    column of points), else None: a searched key (study.json's `searched`), more than one value, or, where
    the searched keys are unknown, fewer than two smoothed trials to tell."""
    if key not in trials or trials.empty or (searched is not None and key in searched):
        return None
    smoothed = trials[trials["kind"] == "smoothed"] if "kind" in trials else trials
    if searched is None and len(smoothed) < 2:
        return None
    values = list(smoothed[key].dropna().unique())
    return values if len(values) == 1 else None


def _running(trials: pd.DataFrame) -> bool:
    return bool(len(trials)) and bool((trials["state"] == "running").any())


def main_result(data: StudyData, paper: pd.DataFrame, extractor_ids: list[str]) -> list[Block]:
    comparable = ("" if extractor_ids == ["inception"] else
                  f" Distances and scores are in the feature space of `{', '.join(extractor_ids)}`: comparable "
                  "within this study, not with Inception FID/IS of the literature.")
    blocks = [("h2", "Main result (the paper's table)"),
              ("p", "Per configuration, the mean over repeats (n = completed trials; others are listed, not "
                    "averaged) " + UNCERTAINTY_NOTE + " Baseline: direct samples and its exact `test_bpd`. Smoothed: "
                    "one-step (gradient-denoised) and two-step samples; bits/dim `≤ bpd_bound`, the two-step upper "
                    "bound on clean test data (one-step denoising defines no likelihood)." + comparable),
              paper_view(paper[paper["n"] > 0], extractor_ids)]
    return blocks + _without_completed(paper, _running(data.trials)) + seed_note(paper)


def seed_note(paper: pd.DataFrame) -> list[Block]:
    """The one line of a study without repeats: its intervals cover sampling noise only (intervals.py)."""
    return [] if (paper["n"] >= 2).any() else [("p", SINGLE_SEED_NOTE)]


def _without_completed(paper: pd.DataFrame, running: bool) -> list[Block]:
    """The configurations no completed trial speaks for: named with their trials' states. While the study
    runs they may still complete; after it they will not (pruned, errored or interrupted for good)."""
    empty = paper[paper["n"] == 0].drop_duplicates("model")
    if empty.empty:
        return []
    listed = "; ".join(f"{r['model']}: {r['not_included']}" for _, r in empty.iterrows())
    if running:
        return [("p", f"No completed trial yet (see the trials table for their latest numbers): {listed}.")]
    return [("p", "Not in the table: configurations none of whose trials completed, and the study has ended "
                  f"(the trials table has their latest numbers): {listed}.")]


def importance_section(named: dict[str, pd.DataFrame], plot_paths: dict[str, Path], root: Path,
                       reason: str, objective: Optional[str]) -> list[Block]:
    blocks: list[Block] = [("h2", "Hyperparameter importance")]
    table = named.get("importance")
    if table is None:
        return blocks + [("p", f"Not computed: {reason}")]
    blocks.append(("p", f"Optuna's fANOVA evaluator (seeded) on the {int(table['n_trials'].iloc[0])} completed "
                        f"searched trials: the fraction of the variance of `{objective}` each searched parameter "
                        "explains (summing to 1). Few trials make it a rough guide, not a measurement."))
    blocks.append(Table(["parameter", "importance"], [[r["parameter"], f"{r['importance']:.3f}"]
                                                      for _, r in table.iterrows()]))
    if "importance" in plot_paths:
        blocks.append(Image(str(plot_paths["importance"].relative_to(root)), "hyperparameter importance (fANOVA)"))
    return blocks


def trend_section(data: StudyData, by: str, trend: pd.DataFrame, extractor_ids: list[str],
                  plot_paths: dict[str, Path], plot_names: list[str], root: Path,
                  bins: Optional[dict] = None) -> list[Block]:
    blocks: list[Block] = [("h2", f"Trends vs {by}")]
    constant = held_constant(data.trials, by, data.study_config.get("searched"))
    if constant is not None:
        value = ", ".join(fmt(v) for v in constant) or "?"
        blocks.append(("p", f"The study held `{by}` at {value} for every smoothed trial, so no plot over it (it "
                            "would be one column of points); the table below lists the configurations."))
    blocks.append(("p", f"Rows: configurations (every hyperparameter that varies except `seed`), sorted by `{by}`; "
                        f"mean over repeats; n = completed trials; {sample_counts(data.trials)} generated samples per "
                        "distance. " + UNCERTAINTY_NOTE))
    for key, (low, high, width, log) in (bins or {}).items():
        unit = " decades (log scale)" if log else ""
        blocks.append(("p", f"`{key}` was searched continuously in [{fmt(low)}, {fmt(high)}], so no two trials share "
                            f"a value: repeats are trials in one bin of width {fmt(width)}{unit}, written "
                            "[low, high); values outside the range (the σ = 0 baseline) stay exact. A row that "
                            "pools several configurations (`trials:configs` in the exported tables) has a t95 "
                            "that holds their spread as well as the seeds'."))
    blocks.append(trend_view(trend, sample_columns(extractor_ids)))
    blocks.append(trend_view(trend, list(BPD_METRICS)))
    blocks += [Image(str(plot_paths[n].relative_to(root)), caption) for n, caption in plot_names if n in plot_paths]
    return blocks


DIAGNOSTICS_NOTE = (
    "Which model is at fault. A smoothed trial's samples pass through two models: p(x~) draws x~, then the "
    "denoiser (two-step) or one gradient step on log p(x~) (one-step) turns it into x. The diagnostics feed "
    "the same real test images x~ = x + σ·eps (a fixed seeded choice, fixed eps: the same in every trial at "
    "one σ) to the models, distances with ± SE: `realnoisy` is the real x~ themselves against the clean test "
    "split, the floor of what the noise alone costs; `onestep_realnoisy` and `twostep_realnoisy` are one-step "
    "denoising and the denoiser given those real x~, to set beside `onestep` and `twostep` of the model's own "
    "x~; `xtilde` is the model's own x~ against real noisy test images at the same σ, p(x~) alone. Real-input "
    "distances that stay low while `onestep`/`twostep` and `xtilde` rise put the fault on p(x~); real-input "
    "distances that rise put it on the denoiser (`test_bpd_denoiser` says the same in bits/dim).")


def diagnostic_columns(extractor: str) -> list[str]:
    """The floor, each denoiser on real x~ beside the same sampler on the model's x~, then p(x~) alone."""
    names = ["realnoisy", "onestep_realnoisy", "onestep", "twostep_realnoisy", "twostep", "xtilde"]
    return [sample_metric_name("distance", extractor, s) for s in names]


def diagnostics_section(data: StudyData, trend: pd.DataFrame, extractor: str) -> list[Block]:
    """Per smoothed trial (its latest evaluation) and per σ (trend_table), the diagnostics beside the samples'."""
    blocks: list[Block] = [("h2", "Diagnostics: which model is at fault")]
    columns = diagnostic_columns(extractor)
    trials = data.trials
    logged = [c for c in columns if c in trials and trials[c].notna().any()]
    diagnostic = [c for c in logged if c in {sample_metric_name("distance", extractor, d) for d in DIAGNOSTICS}]
    if not diagnostic:
        return blocks + [("p", "No trial logged diagnostics (`diagnostics` = off, baseline trials only, or a "
                               "study from before them).")]
    diagnosed = trials[trials[diagnostic].notna().any(axis=1)]
    rows = [[str(t["run_name"]), state_mark(t["state"]), fmt(t.get("noise_std")), fmt(t.get("seed")),
             fmt(t.get("epochs")), *(mean_std(t.get(c), None, se=t.get(standard_error_name(c))) for c in logged),
             fmt(t.get("test_bpd_denoiser"))] for _, t in diagnosed.iterrows()]
    blocks += [("p", DIAGNOSTICS_NOTE + " Per trial, at its latest evaluation:"),
               Table(["run", "state", "noise_std", "seed", "epochs", *(f"{c} (± SE)" for c in logged),
                      "test_bpd_denoiser"], rows),
               ("p", "Per configuration, the mean over repeats as in the trends:"),
               trend_view(trend, logged)]
    return blocks


def pareto_section(data: StudyData, extractor: str, plot_paths: dict[str, Path], root: Path) -> list[Block]:
    distance = sample_metric_name("distance", extractor)
    blocks: list[Block] = [("h2", "Sample quality vs likelihood")]
    done = data.trials[data.trials["state"].isin(FINISHED_STATES)]
    if distance in done and "bpd_bound" in done:
        done = done[done[distance].notna() & done["bpd_bound"].notna()]
        front = done[plots.pareto_mask(done["bpd_bound"].to_numpy(float), done[distance].to_numpy(float))]
        rows = [[str(r["run_name"]), fmt(r.get("noise_std")), fmt(r.get("num_mixtures")), fmt(r["bpd_bound"]),
                 mean_std(r[distance], None, se=r.get(standard_error_name(distance))), fmt(r.get("num_eval_samples"))]
                for _, r in front.sort_values("bpd_bound").iterrows()]
        blocks += [("p", f"Pareto front of completed trials (`{distance}` of the product samples and `bpd_bound`, "
                         "both minimized; the front is of the point values, ± is each distance's standard error):"),
                   Table(["run", "noise_std", "num_mixtures", "bpd_bound", f"{distance} (± SE)", "samples"], rows)]
    blocks.append(Image(str(plot_paths["pareto_distance_vs_bpd_bound"].relative_to(root)),
                        f"{distance} vs bpd_bound; hollow: not completed"))
    return blocks


def time_section(data: StudyData, time: pd.DataFrame, note: str, plot_paths: dict[str, Path],
                 root: Path) -> list[Block]:
    return [("h2", "Time"),
            ("p", "Training hours per 100 epochs from the logged `epoch_seconds` (all models of a trial: a smoothed "
                  "trial trains p(x~) and its denoiser); generation hours per 2000 images from `sample_seconds` "
                  "over `num_eval_samples` (a smoothed trial draws x~ then the two-step samples; the one-step "
                  "samples reuse x~). Mean (sd over trials) over trials of every state. " + note),
            time_view(time), Image(str(plot_paths["time"].relative_to(root)), "time per dataset and kind")]


def report_blocks(data: StudyData, named: dict[str, pd.DataFrame], plot_paths: dict[str, Path],
                  extractor_ids: list[str], hardware_note: str, root: Path, files: list[Path],
                  bins: Optional[dict] = None, no_importance: str = "") -> list[Block]:
    extractor = extractor_ids[0] if extractor_ids else "unknown"
    image = lambda name, caption: Image(str(plot_paths[name].relative_to(root)), caption)  # noqa: E731
    blocks = header(data) + main_result(data, named["paper_table"], extractor_ids)
    objective = (data.experiment_tags.get("objective") or "").split(",")[0] or None
    blocks += importance_section(named, plot_paths, root, no_importance, objective)
    blocks += [("h2", "Trials"),
               ("p", "Every trial of the study with its state (`state` tag of the study: completed, pruned by "
                     "ASHA, errored, interrupted, running) and MLflow `status`; metrics at its latest epoch."),
               trials_view(data.trials, extractor)]
    blocks += trend_section(data, "noise_std", named["trend_noise_std"], extractor_ids, plot_paths,
                            [("distance_vs_sigma", "sample quality vs σ; dashed: the σ = 0 baseline"),
                             ("bpd_vs_sigma", "bits/dim vs σ")], root, bins)
    blocks += trend_section(data, "num_mixtures", named["trend_num_mixtures"], extractor_ids, plot_paths,
                            [("distance_vs_mixtures", "sample quality vs num_mixtures")], root)
    blocks += diagnostics_section(data, named["trend_noise_std"], extractor)
    blocks += pareto_section(data, extractor, plot_paths, root)
    blocks.append(("h2", "Learning curves"))
    blocks += [image(n, "learning curves per trial") for n in sorted(plot_paths) if n.startswith("learning_curves")]
    blocks += [("h2", "Samples"), image("samples_per_sigma", "latest sample grids per σ and sampler")]
    blocks += time_section(data, named["time"], hardware_note, plot_paths, root)
    blocks += [("h2", "Files"),
               ("p", "Tables (Parquet typed for notebooks, CSV): " + ", ".join(
                   f"`{p.relative_to(root)}`" for p in files) + ". `pandas.read_parquet` gives them back typed; "
                     "`analysis.load_trials` reads the study from MLflow again.")]
    return blocks
