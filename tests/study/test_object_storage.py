"""A study on object storage, end to end against a real S3 API server (moto's, on loopback): the
study finishes (its best checkpoints reach MLflow through the study's own filesystem), the same
command finds it finished without a second run per trial, study.sample and analysis.report read it,
and a second driver on the running study is refused in one line. The storage path is pyarrow's
URI form with a query (`?endpoint_override=...&scheme=http`), the study name goes before it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study.object_store import keys, mlflow_server, moto_s3, s3_client

pytestmark = pytest.mark.slow
NAME = "s3study"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


def _keys(s3, prefix: str) -> list[str]:
    return keys(s3["port"], prefix)


def _study(s3, tmp_path: Path, *extra: str, name: str = NAME, wait: bool = True):
    argv = [sys.executable, "-m", "study.run", "--space", "noise_sweep", "--smoke-test", "--name", name,
            "--storage-path", s3["storage"], "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra]
    if not wait:
        return subprocess.Popen(argv, cwd=tmp_path, env=s3["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    return subprocess.run(argv, cwd=tmp_path, env=s3["env"], capture_output=True, text=True, timeout=1200)


def _trial_runs(tmp_path: Path, name: str = NAME) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    return [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("run_role") == "trial"]


@pytest.fixture(scope="module")
def finished(s3, tmp_path_factory):
    work = tmp_path_factory.mktemp("s3study")
    first = _study(s3, work)
    return work, first


def test_the_study_finishes_on_s3_and_the_same_command_adds_nothing(s3, finished):
    work, first = finished
    assert first.returncode == 0, first.stderr[-3000:]
    assert "3 trials in" in first.stdout and "3 completed" in first.stdout, first.stdout[-2000:]
    assert "View run" not in first.stdout + first.stderr  # MLflow's own per-run lines are off
    keys = _keys(s3, f"studies/{NAME}/")
    for name in ("study.json", "results.csv", "optuna_trials.json", "tuner.pkl"):
        assert f"studies/{NAME}/{name}" in keys, name
    assert sum("/checkpoint_" in k and k.endswith("checkpoint.pt") for k in keys) >= 3
    runs = _trial_runs(work)
    assert len(runs) == 3 and all(r.data.tags.get("state") == "completed" for r in runs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    for run in runs:  # the best checkpoint of each trial, read from the bucket through the study's filesystem
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")], run.info.run_name
    again = _study(s3, work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming study" in again.stdout and len(_trial_runs(work)) == 3
    steps = [len(client.get_metric_history(r.info.run_id, "epoch")) for r in _trial_runs(work)]
    assert steps == [2, 2, 2], steps  # no epoch logged twice


def test_sample_and_report_read_the_s3_study(s3, finished):
    work, first = finished
    assert first.returncode == 0, first.stderr[-3000:]
    sample = subprocess.run([sys.executable, "-m", "study.sample", "--study", NAME, "--storage-path", s3["storage"],
                             "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--n", "4", "--device", "cpu",
                             "--out", str(work / "samples")],
                            cwd=work, env=s3["env"], capture_output=True, text=True, timeout=600)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert any((work / "samples").iterdir())
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--study", NAME, "--storage-path", s3["storage"],
                             "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--out", str(work / "report"),
                             "--no-log-artifacts"], cwd=work, env=s3["env"], capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (work / "report").is_dir() and any((work / "report").iterdir())


def test_a_second_driver_on_a_running_s3_study_is_refused_in_one_line(s3, tmp_path):
    first = _study(s3, tmp_path, name="s3twice", wait=False)
    try:
        deadline = time.monotonic() + 300
        while f"studies/s3twice/study.lease" not in _keys(s3, "studies/s3twice/"):
            assert first.poll() is None and time.monotonic() < deadline, "the first driver never took the lease"
            time.sleep(1)
        other = tmp_path / "elsewhere"
        other.mkdir()
        second = _study(s3, other, name="s3twice")
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert second.returncode == 2 and len(lines) == 1 and "another driver" in lines[0], second.stderr[-2000:]
    finally:
        os.killpg(first.pid, 9)
        first.communicate()


def test_a_missing_bucket_is_one_line_and_exit_2_before_anything_is_written(s3, tmp_path):
    missing = s3["storage"].replace("s3://lab/", "s3://no-such-bucket/")
    argv = [sys.executable, "-m", "study.run", "--space", "noise_sweep", "--smoke-test", "--storage-path", missing,
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    done = subprocess.run(argv, cwd=tmp_path, env=s3["env"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "bucket 'no-such-bucket' does not exist" in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists()
    assert [b["Name"] for b in s3_client(s3["port"]).list_buckets()["Buckets"]] == ["lab"]


@pytest.mark.parametrize("credentials", [None, ("admin", "wrong-password")])
def test_refused_mlflow_credentials_are_one_line_and_exit_2_before_anything_is_written(s3, tmp_path, credentials):
    tracking = tmp_path / "tracking"
    tracking.mkdir()
    env = {k: v for k, v in s3["env"].items() if not k.startswith("MLFLOW_TRACKING_")}
    if credentials:
        env.update(MLFLOW_TRACKING_USERNAME=credentials[0], MLFLOW_TRACKING_PASSWORD=credentials[1])
    with mlflow_server(tracking, auth=True) as url:
        argv = [sys.executable, "-m", "study.run", "--space", "noise_sweep", "--smoke-test", "--name", "refused",
                "--storage-path", s3["storage"], "--mlflow-uri", url]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "refused the credentials (HTTP 401)" in lines[0], lines
    assert _keys(s3, "studies/refused/") == []
