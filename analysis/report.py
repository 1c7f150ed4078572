"""`python -m analysis.report --study NAME`: tables, plots and one report of a study, finished or running.

Writes to --out (default: `<storage-path>/<study>/analysis`):
  report.md (PNGs linked from plots/), report.html (the same, PNGs embedded),
  tables/*.parquet and *.csv (trials, epochs, paper table, trend tables, time), plots/*.png,
and logs that folder as artifacts `analysis/` of the study's summary run (while the first
session of a study runs there is no summary run yet: then of a run tagged run_role=analysis).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pandas as pd
from mlflow.exceptions import MlflowException

from analysis import importance, plots, render, sections, tables
from analysis.conventions import FINISHED_STATES, REPORT_ROLE, ROLE_TAG, SAMPLE_PNG, SAMPLES_ARTIFACT_DIR
from analysis.load import AnalysisError, StudyData, client_for, load_trials, resolve_mlflow_uri, study_dir

TABLES_DIR, PLOTS_DIR = "tables", "plots"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
ARTIFACT_PATH = "analysis"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def default_out(study: str, storage_path: Optional[str] = None) -> Path:
    directory = study_dir(study, storage_path)
    if "://" not in directory and Path(directory).is_dir():
        return Path(directory) / "analysis"
    return Path(f"analysis-{study}")


def extractor_ids(data: StudyData) -> list[str]:
    """The study's extractor first, then any other found in the metric names (each its own columns)."""
    found = list(dict.fromkeys(m.extractor for m in tables.sample_metrics(data.trials.columns)))
    return list(dict.fromkeys([e for e in (data.extractor,) if e] + found))


def study_bins(data: StudyData) -> dict:
    """Bins of the continuous searched hyperparameters (tables.searched_bins), from study.json; none in a
    study with --repeats, whose configurations repeat exactly (a row is one configuration's seeds)."""
    if int(data.study_config.get("repeats", 1)) > 1:
        return {}
    return tables.searched_bins(data.study_config.get("searched") or {})


def objective(data: StudyData) -> tuple[Optional[str], str]:
    """(the study's first objective metric, its mode) from the experiment tag and the summary run or study.json."""
    name = (data.experiment_tags.get("objective") or ",".join(data.study_config.get("objective", []))).split(",")[0]
    mode = (data.summary_params.get("mode") or ",".join(data.study_config.get("mode", [])) or "min").split(",")[0]
    return name or None, mode


def importance_or_reason(data: StudyData) -> tuple[Optional[pd.DataFrame], str]:
    """(importance table, "") when the study searched two or more parameters, else (None, why not)."""
    if "searched" not in data.study_config:
        return None, "study.json does not list the searched parameters (an older or moved study)."
    searched = data.study_config["searched"] or {}
    metric, mode = objective(data)
    reason = importance.why_not(data.trials, searched, metric)
    if reason:
        return None, reason
    return importance.importance_table(data.trials, searched, metric, mode), ""


def study_tables(data: StudyData) -> dict[str, pd.DataFrame]:
    hardware, _ = hardware_note(data)
    bins = study_bins(data)
    named = {"trials": data.trials, "epochs": data.epochs,
             "paper_table": tables.paper_table(data.trials, extractor_ids=extractor_ids(data), bins=bins),
             "trend_noise_std": tables.trend_table(data.trials, "noise_std", bins=bins),
             "trend_num_mixtures": tables.trend_table(data.trials, "num_mixtures", bins=bins),
             "time": tables.time_table(data.trials, data.epochs, hardware)}
    found, _ = importance_or_reason(data)
    if found is not None:
        named["importance"] = found
    return named


def export_tables(named: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Each table as Parquet (typed, for notebooks) and CSV; trend tables with `metric:stat` columns."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in named.items():
        flat = tables.flatten(table) if isinstance(table.columns, pd.MultiIndex) else tables.bins_as_text(table)
        flat.to_parquet(out / f"{name}.parquet", index=False)
        flat.to_csv(out / f"{name}.csv", index=False)
        paths += [out / f"{name}.parquet", out / f"{name}.csv"]
    return paths


def hardware_note(data: StudyData) -> tuple[str, str]:
    """(the time table's hardware cell, a sentence on where it comes from)."""
    if "hardware" in data.trials and data.trials["hardware"].notna().any():
        return "", "Hardware: the runs' `hardware` tag, per trial."
    source = data.summary_params or data.study_config
    where = "the summary run's params" if data.summary_params else "study.json"
    cpus, gpus = source.get("cpus_per_trial"), source.get("gpus_per_trial")
    if cpus is None and gpus is None:
        return "not logged", ("Hardware: the study logs no device and no summary run or study.json was found; "
                              "timings are of unknown hardware.")
    cpus_text = "?" if cpus in (None, "None") else f"{float(cpus):g}"
    gpus_text = "auto" if gpus in (None, "None") else f"{float(gpus):g}"
    cell = f"{cpus_text} CPU + {gpus_text} GPU per trial"
    concurrent = data.study_config.get("max_concurrent")
    sharing = (f" Up to {concurrent} trials ran at once" if concurrent else " Trials ran concurrently as resources allowed")
    return cell, (f"Hardware: the study records no device model, only the resources per trial ({cell}, from {where})."
                  f"{sharing}, so timings include contention for shared CPUs/GPUs.")


# ---------------------------------------------------------------- plots

def fetch_sample_images(data: StudyData, client, dst: Path) -> pd.DataFrame:
    """The latest sample grid per sampler of one trial per configuration (completed first, then
    most epochs, then lowest seed), downloaded from the runs' samples/ artifacts into dst."""
    columns = ["label", "noise_std", "num_mixtures", "sampler", "epoch", "state", "path"]
    trials = data.trials
    if trials.empty:
        return pd.DataFrame(columns=columns)
    keys = [k for k in tables.repeat_keys(trials) if k not in tables.NOT_GROUPED]
    ranked = trials.assign(_done=~trials["state"].isin(FINISHED_STATES), _epochs=-trials["epochs"])
    ranked = ranked.sort_values(["_done", "_epochs", *(["seed"] if "seed" in trials else [])], kind="stable")
    rows = []
    with _no_progress_bars():
        chosen = [group.iloc[0] for _, group in ranked.groupby(keys, dropna=False, sort=False)]
        labels = tables.config_labels(chosen, ["noise_std", "num_mixtures", *keys])
        for trial, label in zip(chosen, labels):
            try:
                for sampler, (epoch, path) in _latest_grids(client, trial["run_id"]).items():
                    local = client.download_artifacts(trial["run_id"], path, str(dst / trial["run_id"]))
                    rows.append([label, float(trial.get("noise_std", 0.0)), trial.get("num_mixtures"), sampler, epoch,
                                 trial["state"], local])
            except (OSError, MlflowException) as err:  # e.g. a moved study whose artifact root no longer exists
                print(f"warning: no sample grids of run {trial['run_id']}: {str(err).splitlines()[0]}", file=sys.stderr)
    return pd.DataFrame(rows, columns=columns)


def _latest_grids(client, run_id: str) -> dict[str, tuple[int, str]]:
    """sampler -> (epoch, artifact path) of the run's latest samples/ grid per sampler."""
    latest: dict[str, tuple[int, str]] = {}
    for info in client.list_artifacts(run_id, SAMPLES_ARTIFACT_DIR):
        match = SAMPLE_PNG.match(Path(info.path).name)
        if match and int(match["epoch"]) >= latest.get(match["sampler"], (-1, ""))[0]:
            latest[match["sampler"]] = (int(match["epoch"]), info.path)
    return latest


@contextlib.contextmanager
def _no_progress_bars():
    """MLflow draws a progress bar per downloaded artifact; a report downloads one per grid."""
    old = os.environ.get(PROGRESS_BAR_ENV)
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = old


def make_plots(data: StudyData, out: Path, client=None, time_table: Optional[pd.DataFrame] = None,
               importance_table: Optional[pd.DataFrame] = None) -> dict[str, Path]:
    """Every plot as out/<name>.png; returns name -> path. A plot over a hyperparameter the study held
    constant (sections.held_constant) is left out: it would be one column of points."""
    extractor = data.extractor or "unknown"
    trials, paths = data.trials, {}
    figures, searched = {}, data.study_config.get("searched")
    if sections.held_constant(trials, "noise_std", searched) is None:
        figures["distance_vs_sigma"] = plots.distance_vs(trials, extractor, "noise_std")
        figures["bpd_vs_sigma"] = plots.bpd_vs_sigma(trials)
    if sections.held_constant(trials, "num_mixtures", searched) is None:
        figures["distance_vs_mixtures"] = plots.distance_vs(trials, extractor, "num_mixtures")
    figures["pareto_distance_vs_bpd_bound"] = plots.pareto(trials, extractor)
    if importance_table is not None:
        figures["importance"] = plots.importance_bars(importance_table, objective(data)[0])
    for i, fig in enumerate(plots.learning_curves(data.epochs, trials, data.extractor)):
        figures["learning_curves" + (f"_{i + 1}" if i else "")] = fig
    if time_table is None:
        time_table = tables.time_table(trials, data.epochs, hardware_note(data)[0])
    figures["time"] = plots.time_bars(time_table)
    for name, fig in figures.items():
        paths[name] = plots.save(fig, out / f"{name}.png")
    client = client or client_for(data.mlflow_uri)
    with tempfile.TemporaryDirectory() as tmp:
        images = fetch_sample_images(data, client, Path(tmp))
        paths["samples_per_sigma"] = plots.save(plots.sample_grid(images), out / "samples_per_sigma.png")
    return paths


# ---------------------------------------------------------------- the report

def write_report(data: StudyData, out: Path, client=None) -> tuple[Path, dict[str, pd.DataFrame]]:
    """Tables, plots, report.md and report.html under `out`; returns the Markdown report's path and the tables."""
    out.mkdir(parents=True, exist_ok=True)
    named = study_tables(data)
    files = export_tables(named, out / TABLES_DIR)
    plot_paths = make_plots(data, out / PLOTS_DIR, client, named["time"], named.get("importance"))
    _, no_importance = importance_or_reason(data)
    blocks = sections.report_blocks(data, named, plot_paths, extractor_ids(data), hardware_note(data)[1], out, files,
                                    study_bins(data), no_importance)
    (out / REPORT_MD).write_text(render.to_markdown(blocks))
    (out / REPORT_HTML).write_text(render.to_html(blocks, out, f"Study {data.study}"))
    return out / REPORT_MD, named


def report_run(data: StudyData, client) -> tuple[str, str]:
    """(run id, role) the report goes to: the summary run, else this study's analysis run (created once)."""
    if data.summary_run_id:
        return data.summary_run_id, "summary"
    found = client.search_runs([data.experiment_id], filter_string=f"tags.{ROLE_TAG} = '{REPORT_ROLE}'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id, REPORT_ROLE
    run = client.create_run(data.experiment_id, run_name="analysis report",
                            tags={ROLE_TAG: REPORT_ROLE, "study": data.study})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id, REPORT_ROLE


def log_report(data: StudyData, out: Path, client=None) -> tuple[str, str]:
    """Log everything under `out` as artifacts `analysis/` of report_run; returns (run id, role)."""
    client = client or client_for(data.mlflow_uri)
    run_id, role = report_run(data, client)
    client.log_artifacts(run_id, str(out), artifact_path=ARTIFACT_PATH)
    return run_id, role


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, action="append", help="study name (the --name of python -m study.run); "
                   "repeated: the studies side by side in one report (analysis/compare.py)")
    p.add_argument("--storage-path", help="the study's --storage-path (default: ~/smoothing-studies)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: the study's, from study.json, else "
                   "sqlite:///<storage-path>/<study>/mlflow.db)")
    p.add_argument("--out", help="output folder (default: <storage-path>/<study>/analysis)")
    p.add_argument("--no-log-artifacts", action="store_true", help="do not log the report to MLflow")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if len(args.study) > 1:
        return compare_main(args)
    args.study = args.study[0]
    try:
        client = client_for(resolve_mlflow_uri(args.study, args.storage_path, args.mlflow_uri))
        data = load_trials(args.study, args.storage_path, args.mlflow_uri, client=client)
        out = Path(args.out) if args.out else default_out(args.study, args.storage_path)
        report, named = write_report(data, out, client)
        logged = None if args.no_log_artifacts else log_report(data, out, client)
    except (AnalysisError, MlflowException, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"python -m analysis.report: error: {message}", file=sys.stderr)
        return 2
    print(f"study {args.study!r}: {len(data.trials)} trials ({sections.state_counts(data.trials) or 'none yet'})")
    paper = named["paper_table"]
    print(render.markdown_table(render.paper_view(paper[paper["n"] > 0], extractor_ids(data))))
    if (paper["n"] == 0).any():
        print(f"(+ {paper.loc[paper['n'] == 0, 'model'].nunique()} configurations without a completed trial: "
              "see the report)")
    for _, text in sections.seed_note(paper):
        print(text.replace("**", "").replace("`", ""))
    print(f"report: {report}  (and {out / REPORT_HTML}, tables/, plots/)")
    if logged:
        print(f"logged to MLflow run {logged[0]} ({logged[1]} run) under {ARTIFACT_PATH}/")
    return 0


def compare_main(args) -> int:
    from analysis.compare import default_out as compare_out, write_comparison

    try:
        datas = [load_trials(study, args.storage_path, args.mlflow_uri) for study in args.study]
        report = write_comparison(datas, Path(args.out) if args.out else compare_out(args.study))
    except (AnalysisError, MlflowException, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"python -m analysis.report: error: {message}", file=sys.stderr)
        return 2
    for data in datas:
        print(f"study {data.study!r}: {len(data.trials)} trials ({sections.state_counts(data.trials) or 'none yet'})")
    print(f"report: {report}  (and {report.with_name(REPORT_HTML)}, tables/, plots/; not logged to MLflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
