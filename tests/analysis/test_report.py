"""`python -m analysis.report` end to end on the written study: files, plots, Parquet, MLflow artifacts, errors."""
import contextlib
import dataclasses
import io
import math
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from analysis import report
from tests.analysis.conftest import EXTRACTOR, STUDY

PLOTS = {"distance_vs_sigma", "bpd_vs_sigma", "distance_vs_mixtures", "pareto_distance_vs_bpd_bound",
         "learning_curves", "samples_per_sigma", "time"}


@pytest.fixture(scope="module")
def cli_run(study, tmp_path_factory):
    """The command line's main() on the written study (in this interpreter: a second one would
    spend ~10 s of the shared CPUs importing MLflow again)."""
    out = tmp_path_factory.mktemp("report")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = report.main(["--study", STUDY, "--storage-path", str(study["storage"]), "--out", str(out)])
    return subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue()), out


def _not_blank(path: Path) -> bool:
    pixels = mpimg.imread(path)
    return path.stat().st_size > 5000 and pixels.std() > 0.01


def test_cli_writes_the_report(cli_run, study):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    assert f"logged to MLflow run {study['run_ids']['summary']} (summary run)" in proc.stdout
    assert "Downloading artifacts" not in proc.stderr, "no progress bar per sample grid"
    text = (out / "report.md").read_text()
    assert (f"| model | sampler | n | samples | is_{EXTRACTOR} ↑ (± t95 seeds; SE bootstrap) | fd_{EXTRACTOR} ↓ "
            "(± t95 seeds; SE bootstrap) | bits/dim ↓ | not included |") in text
    # conftest, two seeds each: ± t95 = t(0.975, 1) sd / sqrt(2) = 12.706 sd / sqrt(2) across seeds (baseline fd
    # 20, 30: sd 7.07 -> 64), SE = sqrt(sum se_i^2) / 2, the bootstrap SE of the mean (fd se = fd / 10: 1.8)
    assert ("| PixelCNN++ baseline (σ=0, K=5) | direct | 2 | 100 | 2.5 ± 6.4 (t95, n=2), SE 0.035 "
            "| 25 ± 64 (t95, n=2), SE 1.8 | 1.1 ± 1.3 (t95, n=2) |  |") in text
    assert ("| smoothed (σ=0.3, K=5) | two-step | 2 | 100 | 2.7 ± 2.5 (t95, n=2), SE 0.035 "
            "| 12 ± 25 (t95, n=2), SE 0.86 | ≤ 1.4 ± 1.3 (t95, n=2) | 1 interrupted |") in text
    assert "| smoothed (σ=0.5, K=5) | two-step | 1 | 100 | 2.6, SE 0.05 | 16, SE 1.6 |" in text, "one seed: no t95"
    assert "One seed per configuration" not in text, "this study has configurations with two seeds"
    assert "| smoothed (σ=0.6, K=5) |" not in text, "no row of dashes for a configuration without completed trials"
    assert "smoothed (σ=0.6, K=5): 1 running; smoothed (σ=0.7, K=5): 1 pruned." in text
    for state in ("pruned", "errored", "running", "interrupted"):
        assert f"| **{state}** |" in text, f"{state} trials are marked in the trials table"
    assert "DivergenceError: loss is nan at epoch 3 \\| step 7" in text, "cells are escaped"
    assert "2 CPU + 0.25 GPU per trial" in text and "records no device model" in text
    assert "Data: training images `train_subset` = 500; test images for bits/dim `max_eval_images` = all" in text
    assert "| seed | train_subset | bpd_bound |" in text and "| 0 | 500 |" in text
    for name in PLOTS:
        assert f"](plots/{name}.png)" in text


def test_every_plot_is_produced_and_not_blank(cli_run):
    _, out = cli_run
    produced = {p.stem for p in (out / "plots").glob("*.png")}
    assert produced == PLOTS
    assert all(_not_blank(out / "plots" / f"{name}.png") for name in PLOTS)


def test_html_report_is_self_contained(cli_run):
    _, out = cli_run
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS) and 'src="plots/' not in html
    assert "<b>pruned</b>" in html and "<table>" in html


def test_parquet_round_trip(cli_run, data):
    _, out = cli_run
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "trials.parquet"), data.trials)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "epochs.parquet"), data.epochs)
    trend = pd.read_parquet(out / "tables" / "trend_noise_std.parquet")
    csv = pd.read_csv(out / "tables" / "trend_noise_std.csv")
    assert list(trend.columns) == list(csv.columns)
    pd.testing.assert_series_equal(trend[f"fd_{EXTRACTOR}_twostep:mean"], csv[f"fd_{EXTRACTOR}_twostep:mean"])


def test_report_is_logged_on_the_summary_run(cli_run, data, study):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=study["uri"])
    logged = {Path(a.path).name for a in client.list_artifacts(study["run_ids"]["summary"], "analysis")}
    assert {"report.md", "report.html", "plots", "tables"} <= logged
    plots = {Path(a.path).stem for a in client.list_artifacts(study["run_ids"]["summary"], "analysis/plots")}
    assert plots == PLOTS


def test_without_a_summary_run_the_report_gets_its_own_run(data, study):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=study["uri"])
    running = dataclasses.replace(data, summary_run_id=None)
    first, role = report.report_run(running, client)
    again, _ = report.report_run(running, client)
    assert role == "analysis" and first == again != study["run_ids"]["summary"]
    assert client.get_run(first).data.tags == {**client.get_run(first).data.tags, "run_role": "analysis"}


def test_one_grid_per_configuration_prefers_a_completed_trial(data, study, tmp_path):
    from mlflow.tracking import MlflowClient

    images = report.fetch_sample_images(data, MlflowClient(tracking_uri=study["uri"]), tmp_path)
    assert len(images) == 1 + 4 * 2, "baseline direct; 4 evaluated smoothed configurations x 2 samplers"
    row = images[(images.noise_std == 0.3) & images.label.str.contains("K=5")].iloc[0]
    assert row["state"] == "completed" and row["epoch"] == 4 and Path(row["path"]).is_file()


def test_plots_of_a_study_with_nothing_to_show(data, tmp_path):
    early = dataclasses.replace(data, trials=data.trials[data.trials.state == "running"],
                                epochs=data.epochs[data.epochs.state == "running"])
    paths = report.make_plots(early, tmp_path)
    assert {p.stem for p in paths.values()} == PLOTS and all(_not_blank(p) for p in paths.values())


def test_unreachable_store_is_one_line_and_nonzero(capsys):
    assert report.main(["--study", STUDY, "--mlflow-uri", "http://127.0.0.1:9", "--no-log-artifacts"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0]


def test_unknown_study_is_one_line_and_nonzero(study, capsys):
    assert report.main(["--study", "nope", "--mlflow-uri", study["uri"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"python -m analysis.report: error: no study 'nope' in MLflow at {study['uri']}; studies there: ")
    assert STUDY in err[0]
    assert report.main(["--study", "nope", "--storage-path", str(study["storage"])]) == 2
    assert "no MLflow store at" in capsys.readouterr().err


def test_a_study_without_trials_yet(study, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=study["uri"])
    client.create_experiment("just-started", artifact_location=(tmp_path / "artifacts").as_uri())
    out = tmp_path / "out"
    assert report.main(["--study", "just-started", "--mlflow-uri", study["uri"], "--out", str(out)]) == 0
    assert "0 trials (none yet)" in capsys.readouterr().out
    assert {p.stem for p in (out / "plots").glob("*.png")} == PLOTS
    runs = client.search_runs([client.get_experiment_by_name("just-started").experiment_id])
    assert [r.data.tags["run_role"] for r in runs] == ["analysis"], "no summary run yet: the report's own run"


def test_distance_plot_draws_each_trials_standard_error(data):
    from matplotlib.container import ErrorbarContainer

    from analysis import plots

    fig = plots.distance_vs(data.trials, EXTRACTOR, "noise_std")
    ax = fig.axes[0]
    spans = set()
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                spans |= {(round(float(s[0][0]), 3), round(float(s[0][1]), 3), round(float(s[1][1]), 3))
                          for s in collection.get_segments()}
    # conftest: s03a two-step 10 ± 1.0, s03b 14 ± 1.4 at sigma 0.3 (se = distance / 10)
    assert {(0.3, 9.0, 11.0), (0.3, 12.6, 15.4)} <= spans
    assert "100 generated samples per point" in fig.texts[0].get_text()


def test_distance_plot_draws_the_t_interval_across_seeds_on_each_mean(data):
    from matplotlib.container import ErrorbarContainer

    from analysis import plots

    fig = plots.distance_vs(data.trials, EXTRACTOR, "noise_std")
    ax = fig.axes[0]
    spans, labels = set(), [t.get_text() for t in ax.get_legend().get_texts()]
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer) and container.get_label().endswith(")"):
            for collection in container.lines[2]:
                spans |= {(round(float(s[0][0]), 3), round(float(s[0][1]), 2), round(float(s[1][1]), 2))
                          for s in collection.get_segments()}
    # two-step at sigma 0.3: seeds 10 and 14, mean 12 ± t(0.975, 1) * sqrt(8) / sqrt(2) = 12 ± 25.41
    t95 = math.tan(0.475 * math.pi) * 2.0
    assert (0.3, round(12 - t95, 2), round(12 + t95, 2)) in spans
    assert any("mean ± t95 (seeds, n=1–2)" in text for text in labels), labels
    assert any("per trial ± SE (bootstrap)" in text for text in labels), labels


def test_a_single_seed_study_says_its_intervals_cover_sampling_noise_only(data):
    from analysis import sections
    from analysis.render import markdown_table, trend_view
    from analysis.tables import paper_table, trend_table

    single = data.trials[data.trials["seed"] == 0]
    single.attrs = data.trials.attrs
    note = sections.seed_note(paper_table(single))
    assert len(note) == 1 and "covers the sampling noise of the generated samples only" in note[0][1]
    assert "--repeats" in note[0][1]
    assert sections.seed_note(paper_table(data.trials)) == [], "two seeds of a configuration: intervals across seeds"
    cells = markdown_table(trend_view(trend_table(single, "noise_std"), [f"fd_{EXTRACTOR}_twostep"]))
    assert "| 10, SE 1 |" in cells and "t95" not in cells, "one seed: its value and SE, no interval"
