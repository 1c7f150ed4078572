"""A study whose trials are 2-worker Ray Train DDP runs, end to end through the CLI (CPU, gloo)."""
from __future__ import annotations

import json

import pytest

from tests.study.helpers import run_cli, steps, study_cmd, study_runs

pytestmark = pytest.mark.slow

NAME = "ddp"


@pytest.mark.timeout(600)
def test_a_study_with_two_workers_per_trial_runs_end_to_end(tmp_path):
    result = run_cli(study_cmd(tmp_path, NAME, "--space", "mixture_sweep", "--smoke-test", "--num-samples", "1",
                               "--workers-per-trial", "2"), timeout=540)
    assert result.returncode == 0, result.stdout[-4000:]
    print(result.stdout[-1500:])
    assert "2 DDP workers" in result.stdout
    study_dir = tmp_path / NAME
    client, exp, trials, summaries = study_runs(study_dir, NAME)
    assert len(trials) == 1 and len(summaries) == 1  # one Tune trial, one MLflow run, as for one worker
    (run,) = trials
    assert steps(client, run) == [1, 2]
    assert run.data.params["workers_per_trial"] == "2" and run.data.tags["state"] == "completed"
    assert "2 DDP workers" in run.data.tags["hardware"]
    metrics = run.data.metrics
    assert {"fd_digits_cnn", "bpd_bound", "sample_seconds", "bpd_seconds", "feature_seconds"} <= set(metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert "checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
    history = json.loads((study_dir / "optuna_trials.json").read_text())
    assert [t["state"] for t in history] == ["COMPLETE"]
