"""Shared pieces of the end-to-end study tests: running the CLI, reading the MLflow store."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def study_cmd(storage: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "study.run", "--storage-path", str(storage), "--name", name, *extra]


def run_cli(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the CLI to its end in its own session; whatever it leaves behind (Ray) is killed after."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def kill_session(pid: int) -> None:
    """SIGKILL the process group the test started (the driver and the local Ray it spawned)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def mlflow_client(study_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{study_dir}/mlflow.db")


def study_runs(study_dir: Path, name: str):
    client = mlflow_client(study_dir)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("run_role") == "trial"]
    summaries = [r for r in runs if r.data.tags.get("run_role") == "summary"]
    return client, exp, trials, summaries


def steps(client, run, key: str = "epoch") -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
