"""SIGKILL of the driver mid-study, then the same command again: the study resumes where it stopped."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from tests.study.helpers import REPO, kill_session, run_cli, steps, study_cmd, study_runs, wait_for

pytestmark = pytest.mark.slow

NAME = "killed"
# One searched trial + the baseline, 3 epochs each with a checkpoint every epoch.
ARGS = ("--space", "noise_sweep", "--smoke-test", "--num-samples", "1", "--max-epochs", "3", "--set", "eval_every=1")


def _logged_epochs(db) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("select run_uuid, step from metrics where key = 'epoch'").fetchall()
    except sqlite3.Error:
        return []


@pytest.mark.timeout(600)
def test_sigkill_then_resume(tmp_path):
    study_dir = tmp_path / NAME
    cmd = study_cmd(tmp_path, NAME, *ARGS)
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        # Kill once some trial has a checkpointed epoch and the study is far from done.
        wait_for(lambda: len(_logged_epochs(study_dir / "mlflow.db")) >= 2, timeout=300, interval=0.5,
                 what="two logged epochs")
        before = _logged_epochs(study_dir / "mlflow.db")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_session(driver.pid)  # the local Ray the driver started dies with its machine, too
    assert len(before) < 6, "the study finished before it could be killed"

    resumed = run_cli(cmd, timeout=420)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "resuming study" in resumed.stdout

    client, _, trials, summaries = study_runs(study_dir, NAME)
    assert len(trials) == 2 and len(summaries) == 1, "one MLflow run per trial after the resume"
    assert len({r.data.tags["ray_trial_id"] for r in trials}) == 2
    for run in trials:
        assert steps(client, run) == [1, 2, 3], run.info.run_name
        assert steps(client, run, "bpd_bound") == [1, 2, 3]
        assert run.data.tags["state"] == "completed" and run.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {summaries[0].info.run_id}
    history = json.loads((study_dir / "optuna_trials.json").read_text())
    # A trial Optuna was asked for after Tune's last state save is lost to the kill: FAIL in Optuna
    # (TPE ignores it), its MLflow run `abandoned`, and Tune asks again. The search still ends complete.
    lost = [t["number"] for t in history if t["state"] == "FAIL"]
    assert [t["state"] for t in history if t["state"] != "FAIL"] == ["COMPLETE"], history
    abandoned = [r for r in client.search_runs([trials[0].info.experiment_id], max_results=1000)
                 if r.data.tags.get("run_role") == "abandoned"]
    assert len(abandoned) == len(lost), (lost, [r.info.run_name for r in abandoned])
    import optuna

    stored = optuna.load_study(study_name=NAME, storage=f"sqlite:///{study_dir}/optuna.db")
    assert [(t.number, t.state.name, t.params) for t in stored.trials] == [
        (t["number"], t["state"], t["params"]) for t in history], "Optuna's storage holds the resumed search"
    state_files = list(study_dir.glob("searcher-state-*.pkl"))
    assert state_files, "Optuna's state resumes with Tune's searcher checkpoint"
