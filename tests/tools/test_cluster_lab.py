"""tools/cluster_lab.py: the lab starts real services that serve (S3, MLflow with its login, a 3-node Ray
cluster), and `down` leaves no process of it behind; bad input and a missing lab are one line each."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.required import skip_unless_required

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "cluster_lab.py"


@pytest.fixture
def lab_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # cluster_lab imports its helpers as the script does
    import cluster_lab
    import lab_processes

    return cluster_lab, lab_processes


def lab(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=timeout)


def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path):
    for bad in (["--bucket", "Not_A_Bucket"], ["--workers", "-1"], ["--cpus-per-node", "0"]):
        r = lab("up", "--dir", str(tmp_path / "lab"), *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
        assert not (tmp_path / "lab").exists()


def test_without_a_lab_env_and_status_fail_in_one_line_and_down_has_nothing_to_stop(tmp_path):
    for command in ("env", "status"):
        r = lab(command, "--dir", str(tmp_path))
        assert r.returncode == 1 and r.stderr.strip() == "cluster_lab: error: " + (
            f"no running cluster lab in {tmp_path}: python3 tools/cluster_lab.py up --dir {tmp_path}"
            if command == "env" else f"no cluster lab in {tmp_path}")
    r = lab("down", "--dir", str(tmp_path))
    assert r.returncode == 0 and "nothing to stop" in r.stdout


def test_stopping_a_session_kills_members_that_ignore_sigterm_or_left_its_group(lab_modules):
    _, proc = lab_modules
    # a leader ignoring SIGTERM with two children that inherit that; one in a process group of its own
    script = ("import os, signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "subprocess.Popen(['sleep', '300'], preexec_fn=os.setpgrp); subprocess.Popen(['sleep', '300']); "
              "time.sleep(300)")
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(proc.session_members(leader.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = proc.session_members(leader.pid)
        assert len(members) == 3 and len({os.getpgid(p) for p in members}) == 2, members
        assert proc.stop_sessions({leader.pid: signal.SIGTERM}, grace=0.5) == []
        leader.wait(5)
        assert proc.session_members(leader.pid) == []
    finally:
        proc.stop_sessions({leader.pid: signal.SIGKILL}, grace=0.1)


def test_ray_temp_dirs_fit_unix_socket_paths_under_a_deep_lab_dir(lab_modules, tmp_path):
    cluster_lab, _ = lab_modules
    deep = tmp_path / ("d" * 60) / "lab"
    _, ray = cluster_lab.scratch_dirs(deep)
    assert len(str(ray / "worker-99")) <= cluster_lab.RAY_TEMP_MAX and not str(ray).startswith(str(deep))
    short = Path("/l")
    assert cluster_lab.scratch_dirs(short)[1] == short / "ray"


def _processes_mentioning(paths: list[str], commands: tuple[str, ...] = ()) -> list[str]:
    """Live processes whose command line contains one of `paths` or is one of `commands`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in paths) or cmdline.strip() in commands:
            found.append(f"{entry}: {cmdline[:200]}")
    return found


def _started_commands(where: Path) -> tuple[str, ...]:
    """The command lines the lab logged as started (LAB/logs/*.log: '--- cluster lab: starting NAME: ARGV')."""
    lines = [line for log in (where / "logs").glob("*.log") for line in log.read_text().splitlines()]
    return tuple(line.split(": ", 2)[2] for line in lines if line.startswith("--- cluster lab: starting "))


@pytest.mark.slow
def test_the_lab_serves_s3_mlflow_with_login_and_three_ray_nodes_then_down_leaves_nothing(tmp_path, monkeypatch,
                                                                                             lab_modules):
    _, proc = lab_modules
    import lab_components

    missing = lab_components.missing_requirements()
    if missing:
        skip_unless_required("cluster-lab", "the cluster lab needs " + "; ".join(missing))
    where = tmp_path / "lab"
    up = lab("up", "--dir", str(where), timeout=500)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert up.stdout.startswith("cluster lab up in ") and "python3 -m study.run --space noise_sweep" in up.stdout
        state = json.loads((where / "state.json").read_text())
        again = lab("up", "--dir", str(where))
        assert again.returncode == 0 and "already up" in again.stdout and "nothing started" in again.stdout
        assert json.loads((where / "state.json").read_text())["procs"] == state["procs"]
        exported = lab("env", "--dir", str(where))
        env = dict(shlex.split(line)[1].split("=", 1) for line in exported.stdout.splitlines())
        assert env == state["env"]
        _check_s3(env, state["bucket"])
        _check_mlflow(env, state["bucket"], monkeypatch)
        _check_ray(env)
        _check_optuna_database(env, up.stdout)
    finally:
        down = lab("down", "--dir", str(where), timeout=120)
    assert down.returncode == 0, down.stderr
    assert [p for record in state["procs"] for p in proc.session_members(record["pid"])] == []
    assert _processes_mentioning([str(where), state["ray_dir"], state["pg_dir"]], _started_commands(where)) == []
    assert not (where / "state.json").exists() and not Path(state["pg_dir"]).exists()


def _s3(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _check_s3(env, bucket):
    body = os.urandom(4096)
    _s3(env).put_object(Bucket=bucket, Key="probe/object.bin", Body=body)
    assert _s3(env).get_object(Bucket=bucket, Key="probe/object.bin")["Body"].read() == body


def _check_mlflow(env, bucket, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = env["MLFLOW_TRACKING_URI"]
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(MlflowException, match="401|[Uu]nauthenticated|[Uu]nauthorized"):
        MlflowClient(uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_TRACKING_PASSWORD"])
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", env["MLFLOW_S3_ENDPOINT_URL"])
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"lab-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test_bpd", 1.25, step=3)
    client.log_text(run.info.run_id, "a lab artifact", "notes/probe.txt")
    client.set_terminated(run.info.run_id)
    assert [(m.value, m.step) for m in client.get_metric_history(run.info.run_id, "test_bpd")] == [(1.25, 3)]
    keys = [o["Key"] for o in _s3(env).list_objects_v2(Bucket=bucket, Prefix="mlflow/").get("Contents", [])]
    stored = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/notes/probe.txt")]
    assert len(stored) == 1, keys  # the server put the artifact into the lab's bucket
    body = _s3(env).get_object(Bucket=bucket, Key=stored[0])["Body"].read()
    assert body == b"a lab artifact"


def _check_optuna_database(env, printed):
    import psycopg

    url = printed.split("--optuna-storage ")[1].split()[0]  # the printed study command's
    with psycopg.connect(url, password=env["PGPASSWORD"], connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("optuna",)


def _check_ray(env):
    script = ("import json, ray; ray.init(logging_level='ERROR'); "
              "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))")
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(json.loads(r.stdout.strip().splitlines()[-1])) == 3  # the head and its two workers


@pytest.mark.slow
def test_a_component_that_does_not_start_is_named_with_its_log_and_the_rest_is_stopped(tmp_path, lab_modules):
    cluster_lab, _ = lab_modules
    import lab_components

    missing = lab_components.missing_requirements()
    if missing:
        skip_unless_required("cluster-lab", "the cluster lab needs " + "; ".join(missing))
    where = tmp_path / "lab"
    r = lab("up", "--dir", str(where), "--timeout", "0.5", timeout=300)  # nothing serves within 0.5 s
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert " was not ready in time; see " in lines[0] and f"{where}/logs/" in lines[0]
    assert lines[0].endswith("; stopping the rest")
    assert not (where / "state.json").exists()
    started = _started_commands(where)
    assert any("moto.server" in c for c in started) and any("ray start" in c for c in started), started
    assert _processes_mentioning([str(where), *map(str, cluster_lab.scratch_dirs(where))], started) == []
