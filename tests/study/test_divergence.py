"""A diverged trial ends ERROR with its reason, is not retried from its checkpoint, and the study goes on."""
from __future__ import annotations

import json

import pytest

from tests.study.helpers import run_cli, study_cmd, study_runs

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
def test_diverged_trials_error_and_the_study_goes_on(tmp_path):
    # lr = 1000 makes the loss NaN at epoch 1, step 2; trials run one after the other.
    cmd = study_cmd(tmp_path, "nan", "--space", "mixture_sweep", "--smoke-test", "--num-samples", "2",
                    "--max-concurrent", "1", "--max-failures", "1", "--set", "lr=1000")
    result = run_cli(cmd, timeout=360)
    assert result.returncode == 0, result.stdout[-4000:]
    assert result.stdout.count("errored: DivergenceError: loss is nan at epoch 1") == 2, result.stdout[-4000:]

    client, _, trials, summaries = study_runs(tmp_path / "nan", "nan")
    assert len(trials) == 2 and len(summaries) == 1
    for run in trials:
        assert run.info.status == "FAILED" and run.data.tags["state"] == "errored"
        assert run.data.tags["error"].startswith("DivergenceError: loss is nan at epoch 1")
        assert run.data.tags["optuna_state"] == "FAIL"
    history = json.loads((tmp_path / "nan" / "optuna_trials.json").read_text())
    assert [t["state"] for t in history] == ["FAIL", "FAIL"]
    for error_file in (tmp_path / "nan").glob("trial_*/error.txt"):
        text = error_file.read_text()
        assert text.count("Failure #") == 2 and "not retried: the trial diverged before" in text
