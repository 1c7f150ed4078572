"""A study whose trial is a 2-worker Ray Train DDP run (CPU, gloo), end to end through the CLI:
one Tune trial and one MLflow run as for one worker, the metrics of one process on the same
batches, and a Train worker killed after the first checkpoint resumes the trial from it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from study.config import StudyConfig
from tests.study.helpers import REPO, kill_session, steps, study_cmd, study_runs, wait_for
from trainables.experiment import Experiment

pytestmark = pytest.mark.slow

NAME = "ddp"


def _descendants(pid: int) -> list[int]:
    """Processes below `pid` (the CLI this test started and its local Ray), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier}
        found += frontier
    return found


def _train_workers(pid: int) -> list[int]:
    workers = []
    for p in _descendants(pid):
        try:
            if b"RayTrainWorker" in Path(f"/proc/{p}/cmdline").read_bytes():
                workers.append(p)
        except OSError:
            pass
    return workers


@pytest.mark.timeout(600)
def test_a_two_worker_study_runs_end_to_end_and_survives_a_killed_worker(tmp_path):
    cmd = study_cmd(tmp_path, NAME, "--space", "mixture_sweep", "--smoke-test", "--num-samples", "1",
                    "--max-epochs", "3", "--set", "eval_every=1", "--workers-per-trial", "2")
    log = tmp_path / "cli.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        study_dir = tmp_path / NAME
        wait_for(lambda: list(study_dir.glob("trial_*/checkpoint_0*")), timeout=400, interval=0.5,
                 what="the trial's first checkpoint")
        victim = wait_for(lambda: _train_workers(proc.pid), timeout=30, interval=0.5, what="a Ray Train worker")[0]
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=480)
    finally:
        kill_session(proc.pid)
    stdout = log.read_text()
    assert proc.returncode == 0, stdout[-4000:]
    assert "2 DDP workers" in stdout
    client, exp, trials, summaries = study_runs(study_dir, NAME)
    assert len(trials) == 1 and len(summaries) == 1  # one Tune trial, one MLflow run, as for one worker
    (run,) = trials
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert steps(client, run) == [1, 2, 3], "a resumed trial logs no epoch twice"
    assert tags["state"] == "completed" and tags["num_failures"] == "1", tags
    assert params["workers_per_trial"] == "2" and "2 DDP workers" in tags["hardware"]
    assert {"fd_digits_cnn", "bpd_bound", "sample_seconds", "bpd_seconds", "feature_seconds"} <= set(metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert "checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert [t["state"] for t in json.loads((study_dir / "optuna_trials.json").read_text())] == ["COMPLETE"]
    # The retry restored a checkpoint on every rank: its last report (epoch 3) is fewer than 3
    # reports after the restore. (Tune may rewrite result.json on a retry: only the last
    # attempt's rows are certain to be there.)
    (trial_dir,) = study_dir.glob("trial_*")
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert rows[-1]["epoch"] == 3 and rows[-1]["iterations_since_restore"] < 3, rows[-1]
    epochs = [r["epoch"] for r in rows]
    assert len(epochs) == len(set(epochs)), epochs
    assert not list(trial_dir.glob("ddp_attempt_*")), "Train's copies are removed once Tune holds the checkpoints"
    # Rank 0 reported the global batches' numbers: those of one process on the same batches.
    cfg = StudyConfig.from_json(json.dumps(json.loads((study_dir / "study.json").read_text())["config"]))
    one = Experiment(cfg.trial_config({"num_mixtures": int(params["num_mixtures"]), "workers_per_trial": 1}),
                     device="cpu", log=lambda m: None).run_epoch()
    for key in ("train_bpd_smoothed", "train_bpd_denoiser", "test_bpd_smoothed", "bpd_bound"):
        (first,) = [m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == 1]
        assert first == pytest.approx(one[key], abs=1e-4), key


def _state_names_a_checkpoint(study_dir: Path) -> bool:
    """Tune's saved experiment state holds a trial result reported with a checkpoint."""
    for path in study_dir.glob("experiment_state-*.json"):
        try:
            for _, run_metadata in json.loads(path.read_text())["trial_data"]:
                if json.loads(run_metadata).get("last_result", {}).get("checkpoint_dir_name"):
                    return True
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # being written
    return False


@pytest.mark.timeout(900)
def test_a_two_worker_study_resumes_after_its_driver_is_killed(tmp_path):
    """SIGKILL of the driver (with the local Ray it started) after the trial's first checkpoint;
    the same command resumes the 2-worker trial from that checkpoint and ends the study."""
    cmd = study_cmd(tmp_path, NAME, "--space", "mixture_sweep", "--smoke-test", "--num-samples", "1",
                    "--max-epochs", "3", "--set", "eval_every=1", "--workers-per-trial", "2")
    study_dir = tmp_path / NAME
    with (tmp_path / "killed.log").open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _state_names_a_checkpoint(study_dir) or proc.poll() is not None, timeout=400,
                 interval=0.5, what="Tune's saved state naming the trial's first checkpoint")
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    finally:
        kill_session(proc.pid)
        proc.wait()
    with (tmp_path / "resumed.log").open("w") as out:
        resumed = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        resumed.wait(timeout=600)
    finally:
        kill_session(resumed.pid)
    stdout = (tmp_path / "resumed.log").read_text()
    assert resumed.returncode == 0, stdout[-4000:]
    assert "resuming study" in stdout and "2 DDP workers" in stdout
    client, exp, trials, summaries = study_runs(study_dir, NAME)
    assert len(trials) == 1 and len(summaries) == 1
    (run,) = trials
    assert steps(client, run) == [1, 2, 3], "the resumed trial logs every epoch once"
    assert run.data.tags["state"] == "completed" and run.info.status == "FINISHED", run.data.tags
    assert [t["state"] for t in json.loads((study_dir / "optuna_trials.json").read_text())] == ["COMPLETE"]
    (trial_dir,) = study_dir.glob("trial_*")
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert rows[-1]["epoch"] == 3 and rows[-1]["iterations_since_restore"] < 3, "resumed from a checkpoint"
    assert not list(trial_dir.glob("ddp_attempt_*"))
