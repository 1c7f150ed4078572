"""Faults on the cluster lab (issue 22), the study the lab prints run on it as a user would: a Ray worker
node killed mid-trial once the driver has registered a checkpoint of the trial (the trial goes on from that
checkpoint on another node), then, as the trial starts there, the S3 server unreachable for 30 s (moto
stopped with SIGSTOP, so its objects survive; every connection hangs meanwhile). The study ends with exit 0, every trial completed, each
epoch once in MLflow (PostgreSQL) and one COMPLETE Optuna trial (PostgreSQL) per searched trial.

The MLflow server restarted mid-study, wrong credentials, a missing bucket and two drivers are held by
tests/study/test_mlflow_restart.py and tests/study/test_object_storage.py (moto and `mlflow server`)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.required import skip_unless_required
from tests.study.helpers import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NAME = "lab-faults"
EPOCHS = 4
OUTAGE_S = 30


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import lab_components

    missing = lab_components.missing_requirements()
    if missing:
        skip_unless_required("cluster-lab", "the cluster lab needs " + "; ".join(missing))
    where = tmp_path / "lab"
    up = subprocess.run([sys.executable, "tools/cluster_lab.py", "up", "--dir", str(where)], cwd=ROOT,
                        capture_output=True, text=True, timeout=500)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield where, json.loads((where / "state.json").read_text()), up.stdout
    finally:
        subprocess.run([sys.executable, "tools/cluster_lab.py", "down", "--dir", str(where)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)


def _s3(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _trials_on(session_pid: int, members) -> dict[int, str]:
    """Trial processes of a Ray node (its session's members): pid -> trial id, from Tune's trial working dir."""
    out = {}
    for pid in members(session_pid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if os.path.basename(cwd).startswith("trial_"):
            out[pid] = os.path.basename(cwd).removeprefix("trial_")
    return out


def _registered_epochs(env, trial: str) -> int:
    """Epochs of the trial whose checkpoint the driver has taken (0: none yet). The object in the bucket comes
    first, and a node lost before the driver registers it costs the trial that work (Tune restarts it from
    its previous checkpoint); the study's on_checkpoint callback logs the sample grids to the trial's MLflow
    run, each grid named samples_<sampler>_epoch<E>.png."""
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], f"tags.ray_trial_id = '{trial}'") if experiment else []
    names = [a.path for a in client.list_artifacts(runs[0].info.run_id, "samples")] if runs else []
    epochs = [int(n.rsplit("_epoch", 1)[1].split(".")[0]) for n in names if "_epoch" in n]
    return max(epochs, default=0)


def _mlflow_trials(env) -> dict[str, dict]:
    """ray_trial_id -> {"state", "epochs", "duplicates"} of the study's trial runs, through MLflow's public client."""
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")
    out = {}
    for run in runs:
        duplicates = 0
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            duplicates += len(steps) - len(set(steps))
        epochs = sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch"))
        out[run.data.tags["ray_trial_id"]] = {"state": run.data.tags.get("state"), "epochs": epochs,
                                              "duplicates": duplicates}
    return out


@pytest.mark.timeout(1500)
def test_a_lab_study_survives_a_lost_worker_node_and_an_s3_outage(lab, monkeypatch, tmp_path):
    import lab_processes as proc

    where, state, printed = lab
    env = state["env"]
    bucket, pids = state["bucket"], {p["name"]: p["pid"] for p in state["procs"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    command = [line for line in printed.splitlines() if line.startswith("python3 -m study.run")][0]
    argv = [sys.executable if a == "python3" else a for a in shlex.split(command)]
    argv += ["--name", NAME, "--max-epochs", str(EPOCHS), "--set", "eval_every=1",  # a checkpoint every epoch
             "--max-failures", "4"]  # each fault may cost a trial a retry
    workers = [n for n in pids if n.startswith("ray-worker-")]
    log_path = tmp_path / "study.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        study = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            def victim():  # a trial on a worker node, mid-way, whose checkpoint the driver has registered
                for node in workers:
                    for trial in _trials_on(pids[node], proc.session_members).values():
                        if 0 < _registered_epochs(env, trial) < EPOCHS - 1:
                            return node, trial
                assert study.poll() is None, log_path.read_text()[-3000:]
                return None

            node, trial = wait_for(victim, timeout=900, interval=0.5, what="a worker-node trial's first checkpoint")
            time.sleep(1)  # Tune registers the checkpoint just after its callbacks (the grids) return
            proc.stop_sessions({pids[node]: signal.SIGKILL}, grace=0.1)  # the node is gone: raylet, its workers
            killed_at = time.monotonic() - started
            survivors = [n for n in ("ray-head", *workers) if n != node]
            # the outage starts as the lost trial starts again on another node (it reads its checkpoint then)
            wait_for(lambda: any(trial in _trials_on(pids[n], proc.session_members).values() for n in survivors)
                     or study.poll() is not None, timeout=900, interval=0.2, what="the lost trial to start again")
            moto = proc.session_members(pids["s3-moto"])
            outage_at = time.monotonic() - started
            for pid in moto:
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(OUTAGE_S)
            finally:
                for pid in moto:
                    os.kill(pid, signal.SIGCONT)
            rc = study.wait(timeout=1200)
        finally:
            if study.poll() is None:
                os.killpg(study.pid, signal.SIGKILL)
                study.wait()
    out = log_path.read_text()
    print(f"lab faults: node {node} killed at {killed_at:.0f} s while trial {trial} ran; S3 stopped at "
          f"{outage_at:.0f} s for {OUTAGE_S} s; study exit {rc} after {time.monotonic() - started:.0f} s")
    print("\n".join(line for line in out.splitlines() if "retrying" in line or "failed" in line))
    assert rc == 0, out[-4000:]
    assert "3/3 done (3 completed, 0 pruned, 0 errored)" in out, out[-4000:]

    runs = _mlflow_trials(env)
    print(f"lab faults: mlflow {runs}")
    assert len(runs) == 3 and all(r["state"] == "completed" and r["epochs"] == list(range(1, EPOCHS + 1))
                                  and r["duplicates"] == 0 for r in runs.values()), runs
    results = _s3(env).get_object(Bucket=bucket, Key=f"studies/{NAME}/trial_{trial}/result.json")["Body"]
    epochs = [json.loads(line)["epoch"] for line in results.read().decode().splitlines() if line.strip()]
    print(f"lab faults: the lost trial's epochs as Tune logged them: {epochs}")
    assert epochs.count(1) == 1, f"the lost trial started over instead of going on from its checkpoint: {epochs}"

    import optuna

    study_optuna = optuna.load_study(study_name=NAME, storage=printed.split("--optuna-storage ")[1].split()[0])
    states = [t.state.name for t in study_optuna.trials]
    print(f"lab faults: optuna {states}")
    assert states.count("COMPLETE") == 2 and set(states) <= {"COMPLETE", "FAIL"}, states
