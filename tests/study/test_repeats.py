"""`--repeats R`: the flag's bad inputs, study.json and resume, the estimate, the configuration groups, and the
statistics over seeds the study prints and writes to results.csv (against formulas and analysis/intervals.py)."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest

from study import estimate
from study.cli import parse, resolve
from study.config import StudyConfig
from study.groups import config_group, config_label, seed_stats
from study.run import main
from study.summary import format_group_table, group_stats, table_rows, to_csv, with_group_columns
from tests.study.test_bad_inputs import run_main, saved_study, snapshot  # noqa: F401 (saved_study: a fixture)

T1 = math.tan(0.475 * math.pi)  # t(0.975, 1): the Cauchy quantile
TIMES = estimate.StepTimes(device="cpu", train_per_image=0.01, forward_per_image=0.002, sample_fixed=1.0,
                           sample_per_image=0.05, batch_size=64)


def cfg_of(*argv) -> StudyConfig:
    return resolve(parse(["--storage-path", "/tmp/studies-unit", *argv]))


# ---------------------------------------------------------------- the flag

@pytest.mark.parametrize("value, message", [
    ("0", "--repeats must be >= 1, got 0"), ("-2", "--repeats must be >= 1, got -2"),
    ("1.5", "argument --repeats: expected a whole number, got '1.5'"),
    ("two", "argument --repeats: expected a whole number, got 'two'"),
])
def test_bad_repeats_are_one_line_exit_2_and_write_nothing(capsys, tmp_path, value, message):
    storage = tmp_path / "studies"
    try:
        code, lines = run_main(capsys, "--space", "noise_sweep", "--storage-path", str(storage), "--repeats", value)
    except SystemExit as exit_:  # argparse refuses a non-integer before main's try
        code, lines = exit_.code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not storage.exists()


def test_repeats_and_num_samples_of_a_space_without_search_are_refused(capsys, tmp_path):
    code, lines = run_main(capsys, "--space", "paper", "--num-samples", "3", "--repeats", "2",
                           "--storage-path", str(tmp_path / "s"))
    assert code == 2 and len(lines) == 1 and "give --repeats 2 alone" in lines[0], lines
    assert len(cfg_of("--space", "paper", "--repeats", "3").fixed_trials) == 2, "the fixed trials, not expanded"


def test_repeats_are_recorded_and_count_in_the_study_size():
    cfg = cfg_of("--space", "noise_sweep", "--repeats", "3")
    assert cfg.repeats == 3 and (cfg.configurations, cfg.total_trials) == (7, 21)
    assert StudyConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["repeats"] == 3
    older = json.loads(cfg_of("--space", "noise_sweep").to_json())
    del older["repeats"]  # a study.json from before --repeats
    assert StudyConfig.from_json(json.dumps(older)).repeats == 1
    assert cfg_of("--space", "noise_sweep").repeats == 1


def test_a_resume_with_other_repeats_is_refused_and_touches_nothing(capsys, saved_study):  # noqa: F811
    storage, study_dir = saved_study
    before = snapshot(study_dir)
    code, lines = run_main(capsys, "--resume", "--name", "saved", "--storage-path", str(storage), "--repeats", "2")
    assert code == 2 and len(lines) == 1 and "exists with other settings: repeats=1 (asked 2)" in lines[0], lines
    assert snapshot(study_dir) == before


def test_dry_run_prints_the_repeats_and_the_estimate_counts_them(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(estimate, "measure", lambda cfg: TIMES)
    monkeypatch.setattr(estimate, "local_resources", lambda: (2.0, 0.0))
    assert main(["--space", "noise_sweep", "--repeats", "2", "--storage-path", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\n}\n") + 2])["repeats"] == 2
    assert out.splitlines()[-1].endswith("; 14 trials = 7 configurations x 2 seeds, 2 at a time, 1 thread each)")
    plan = estimate.plan_of(cfg_of("--space", "noise_sweep", "--repeats", "2"), estimate.split_sizes("digits"), 2)
    single = estimate.plan_of(cfg_of("--space", "noise_sweep"), estimate.split_sizes("digits"), 2)
    assert (plan.smoothed_trials, plan.baseline_trials) == (12, 2)
    assert estimate.estimate_seconds(TIMES, plan) == pytest.approx(2 * estimate.estimate_seconds(TIMES, single))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- groups and their statistics

def test_configuration_group_ignores_the_seed_only():
    config = {"kind": "smoothed", "noise_std": 0.4814, "num_mixtures": 5, "seed": 0, "lr": 0.002}
    assert config_group(config) == config_group({**config, "seed": 1}) == config_group(dict(reversed(config.items())))
    assert config_group(config) != config_group({**config, "noise_std": 0.4842})
    assert len(config_group(config)) == 10
    assert config_label(config, ["noise_std"]) == "smoothed s=0.4814 K=5"
    assert config_label({**config, "lr": 0.00123}, ["noise_std", "lr"]) == "smoothed s=0.4814 K=5 lr=0.00123"


@pytest.mark.parametrize("values, ses", [
    ([662.0, 785.0], [30.0, 31.0]), ([10.0, 12.0, 14.0], [1.0, 1.2, 1.4]), ([5.0], [0.5]),
    ([10.0, float("nan"), 14.0, None], [1.0, 2.0, 1.4, None]), ([3.0, 4.0], [0.1, None]), ([], []),
])
def test_the_studys_statistics_are_the_analysis_ones(values, ses):
    """study/groups.py restates analysis/intervals.py (study never imports analysis): the two agree."""
    from analysis.intervals import mean_se, seed_interval

    mine, theirs = seed_stats(values, ses), seed_interval(values)
    assert mine["n"] == theirs.n
    for key, expected in (("mean", theirs.mean), ("t95", theirs.half_width), ("se", mean_se(values, ses))):
        assert (mine[key] is None) == math.isnan(expected), key
        assert mine[key] is None or mine[key] == pytest.approx(expected), key


def _records():
    """Two seeds of sigma 0.3 (one-step 662 and 785, SE 30 and 31), one of sigma 0.5, a pruned third seed."""
    def record(trial_id, sigma, seed, onestep, se, epoch=2):
        config = {"kind": "smoothed", "noise_std": sigma, "num_mixtures": 3, "seed": seed, "max_epochs": 2}
        metrics = {"epoch": epoch, "fd_digits_cnn_onestep": onestep, "fd_digits_cnn_onestep_se": se,
                   "fd_digits_cnn": onestep / 2, "fd_digits_cnn_se": se / 2, "bpd_bound": 3.0 + seed}
        return {"trial_id": trial_id, "config": config, "metrics": metrics, "error": None}

    return [record("a", 0.3, 0, 662.0, 30.0), record("b", 0.3, 1, 785.0, 31.0), record("c", 0.5, 0, 500.0, 20.0),
            record("d", 0.3, 2, 900.0, 40.0, epoch=1)]


def test_group_statistics_over_completed_seeds():
    cfg = cfg_of("--space", "noise_sweep", "--smoke-test", "--repeats", "3")
    rows = table_rows(cfg, _records(), {"d": "pruned"})
    stats = group_stats(cfg, rows)
    three = stats[config_group(_records()[0]["config"])]
    assert (three["label"], three["trials"], three["completed"]) == ("smoothed s=0.3 K=3", 3, 2)
    one = three["fd_digits_cnn_onestep"]
    assert (one["mean"], one["n"]) == (723.5, 2), "the pruned seed is not in the mean"
    assert one["t95"] == pytest.approx(T1 * 61.5) and one["se"] == pytest.approx(math.hypot(30.0, 31.0) / 2)
    assert three["bpd_bound"]["t95"] == pytest.approx(T1 * 0.5) and "se" in three["bpd_bound"]
    assert three["bpd_bound"]["se"] is None, "bpd_bound has no standard error"
    alone = stats[config_group(_records()[2]["config"])]["fd_digits_cnn_onestep"]
    assert (alone["mean"], alone["t95"], alone["n"]) == (500.0, None, 1)


def test_results_csv_carries_each_trials_group_and_its_interval_columns():
    cfg = cfg_of("--space", "noise_sweep", "--smoke-test", "--repeats", "3")
    rows = table_rows(cfg, _records(), {"d": "pruned"})
    table = list(csv.DictReader(io.StringIO(to_csv(with_group_columns(cfg, rows)))))
    by_id = {r["trial_id"]: r for r in table}
    a, d, c = by_id["a"], by_id["d"], by_id["c"]
    assert a["config_group"] == d["config_group"] != c["config_group"] and a["config_label"] == "smoothed s=0.3 K=3"
    assert (a["config_trials"], a["config_completed"]) == ("3", "2")
    for row in (a, d):  # every row of a group carries the group's numbers
        assert float(row["fd_digits_cnn_onestep:mean"]) == 723.5
        assert float(row["fd_digits_cnn_onestep:t95"]) == pytest.approx(T1 * 61.5)
        assert row["fd_digits_cnn_onestep:n"] == "2"
        assert float(row["fd_digits_cnn_onestep:se"]) == pytest.approx(math.hypot(30.0, 31.0) / 2)
    assert c["fd_digits_cnn_onestep:t95"] == "" and c["fd_digits_cnn_onestep:n"] == "1", "one seed: no interval"
    assert "bpd_bound:t95" in a and "bpd_bound:se" not in a
    assert float(a["fd_digits_cnn:mean"]) == 361.75, "the objective too"


def test_printed_group_table_and_the_single_seed_line():
    cfg = cfg_of("--space", "noise_sweep", "--smoke-test", "--repeats", "3")
    text = format_group_table(cfg, table_rows(cfg, _records(), {"d": "pruned"}))
    n = cfg.trial["num_eval_samples"]
    assert f"mean ± t95 (seeds) [SE (bootstrap, {n} samples)]" in text
    assert f"| smoothed s=0.3 K=3 | 2/3 | 723.50 ± {T1 * 61.5:.2f} [{math.hypot(30.0, 31.0) / 2:.2f}] |" in text
    assert "| smoothed s=0.5 K=3 | 1/1 | 500.00 [20.00] |" in text
    single = cfg_of("--space", "noise_sweep", "--smoke-test")
    records = _records()[:1] + _records()[2:3]
    line = format_group_table(single, table_rows(single, records, {}))
    assert "\n" not in line and "sampling noise only, not seed-to-seed variation" in line and "--repeats" in line


def test_every_run_of_a_group_is_tagged_and_its_optuna_state_follows_the_group(tmp_path):
    """Repeats that end before the last seed of their configuration were tagged optuna_state RUNNING (Optuna
    is told the mean when all seeds ended); the tracker brings them up to date from Optuna's history."""
    from study.storage import StudyDir
    from study.tracking import MlflowTracker

    cfg = resolve(parse(["--space", "noise_sweep", "--storage-path", str(tmp_path), "--name", "rep",
                         "--repeats", "2"]))
    tracker = MlflowTracker(cfg, StudyDir(cfg.storage_path, cfg.name))
    tracker.setup()
    config = {**cfg.trial, "noise_std": 0.4814}
    tracker.trial_started("a", {**config, "seed": 0}, fixed=False)
    tracker.trial_started("b", {**config, "seed": 1}, fixed=False)
    tracker.trial_started("c", {**config, "noise_std": 0.6, "seed": 0}, fixed=False)
    tags = {t: tracker.client.get_run(tracker.run_id(t)).data.tags for t in "abc"}
    assert tags["a"]["config_group"] == tags["b"]["config_group"] == config_group(config) != tags["c"]["config_group"]
    assert tags["a"]["config_label"] == "smoothed s=0.4814 K=5"
    tracker.trial_ended("a", "completed", None, {"number": 0, "state": "RUNNING"}, {})
    tracker.trial_ended("b", "completed", None, {"number": 0, "state": "COMPLETE"}, {})
    tracker.optuna_history([{"number": 0, "state": "COMPLETE", "values": [1.0], "params": {}}])
    assert {tracker.client.get_run(tracker.run_id(t)).data.tags["optuna_state"] for t in "ab"} == {"COMPLETE"}
    summary = tracker.client.get_run(tracker.parent_run_id)
    assert summary.data.params["repeats"] == "2"
