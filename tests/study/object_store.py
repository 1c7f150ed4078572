"""Real services on loopback for the object-storage tests: moto's S3 API server with one bucket, and an
`mlflow server` whose SQLite store and artifacts live outside any "head node" directory."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.required import skip_unless_required
from tests.study.helpers import free_port

BUCKET = "lab"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "lab", "AWS_DEFAULT_REGION": "us-east-1"}


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def s3_client(port: int):
    import boto3

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="lab", aws_secret_access_key="lab")


@contextlib.contextmanager
def moto_s3(log_dir: Path):
    """{"env", "port", "storage"}: an S3 server with bucket `lab`; `storage` is a study storage URI in
    pyarrow's form with the endpoint in its query."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        skip_unless_required("cluster-lab", "moto[server] and boto3 are not installed (pip install 'moto[server]' boto3)")
    port = free_port()
    log = log_dir / "moto.log"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                s3_client(port).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        env = {**os.environ, **CREDENTIALS, "OMP_NUM_THREADS": "1"}
        env.pop("AWS_ENDPOINT_URL", None)  # the endpoint comes with the URI's query
        yield {"env": env, "port": port,
               "storage": f"s3://{BUCKET}/studies?endpoint_override=127.0.0.1:{port}&scheme=http"}
    finally:
        _stop(server)


def keys(port: int, prefix: str) -> list[str]:
    pages = s3_client(port).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


ADMIN = ("admin", "lab-admin-password-1")


def start_mlflow_server(directory: Path, port: int, auth: bool = False) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port`, its store `directory`/mlflow.db, its artifacts `directory`/artifacts;
    returns once it answers /health. `auth`: MLflow's basic-auth app, admin ADMIN (users in `directory`/auth.db)."""
    log = directory / f"mlflow-server-{time.time_ns()}.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey job consumers: a fast start
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{directory}/mlflow.db", "--artifacts-destination", str(directory / "artifacts")]
    if auth:
        config = directory / "basic_auth.ini"
        config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{directory}/auth.db\n"
                          f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY="lab-secret")
        argv += ["--app-name", "basic-auth"]
    server = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                _stop(server)
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")
            time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    _stop(server)


@contextlib.contextmanager
def mlflow_server(directory: Path, auth: bool = False):
    """The URL of a tracking server (start_mlflow_server) for the block's duration."""
    port = free_port()
    server = start_mlflow_server(directory, port, auth)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(server)
