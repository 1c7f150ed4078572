"""After the search, end to end: a finished smoke study (2 searched trials + the baseline) is
extended to 3 searched trials, then sampled from. Nothing old is re-run or re-logged."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.study.helpers import run_cli, steps, study_cmd, study_runs

pytestmark = pytest.mark.slow

NAME = "grown"


def _state(study_dir):
    client, _, trials, summaries = study_runs(study_dir, NAME)
    runs = {r.data.tags["ray_trial_id"]: (r.info.run_id, r.info.start_time, steps(client, r)) for r in trials}
    results = {p.parent.name: len(p.read_text().splitlines()) for p in study_dir.glob("trial_*/result.json")}
    return runs, results, len(summaries)


@pytest.mark.timeout(900)
def test_extend_then_sample(tmp_path):
    study_dir = tmp_path / NAME
    first = run_cli(study_cmd(tmp_path, NAME, "--space", "noise_sweep", "--smoke-test"), timeout=420)
    assert first.returncode == 0, first.stdout[-4000:]
    runs_before, results_before, _ = _state(study_dir)
    assert len(runs_before) == 3

    grown = run_cli(study_cmd(tmp_path, NAME, "--resume", "--num-samples", "3"), timeout=420)
    assert grown.returncode == 0, grown.stdout[-4000:]
    assert f"extending study '{NAME}' from 2 to 3 searched trials" in grown.stdout
    runs, results, summaries = _state(study_dir)
    assert summaries == 1 and len(runs) == 4, "one MLflow run per trial, one summary run"
    assert {k: runs[k] for k in runs_before} == runs_before, "old runs untouched: same id, start, epochs"
    assert all(steps == [1, 2] for _, _, steps in runs.values())
    assert {k: results[k] for k in results_before} == results_before, "no old trial re-ran"
    history = json.loads((study_dir / "optuna_trials.json").read_text())
    assert [(t["number"], t["state"]) for t in history] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    doc = json.loads((study_dir / "study.json").read_text())
    assert doc["config"]["num_samples"] == 3 and [(e["from"], e["to"]) for e in doc["extensions"]] == [(2, 3)]

    again = run_cli(study_cmd(tmp_path, NAME), timeout=300)  # the original command: nothing left to run
    assert again.returncode == 0 and "4 trials" in again.stdout, again.stdout[-3000:]
    assert _state(study_dir)[0] == runs

    sampled = run_cli([sys.executable, "-m", "study.sample", "--study", NAME, "--storage-path", str(tmp_path),
                       "--n", "40", "--out", str(tmp_path / "samples")], timeout=300)
    assert sampled.returncode == 0, sampled.stdout[-3000:]
    images = np.load(tmp_path / "samples" / "samples.npz")["images"]
    assert images.shape == (40, 8, 8, 1) and images.dtype == np.uint8
