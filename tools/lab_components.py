"""The cluster lab's components (tools/cluster_lab.py): what each one needs, its command, when it serves.

- S3: moto's server (`python -m moto.server`, from `moto[server]`), one bucket made with boto3.
- PostgreSQL: Debian's binaries (/usr/lib/postgresql/*/bin) run as a cluster of the lab's own
  (initdb in the lab's scratch directory, TCP on 127.0.0.1 only, no Unix socket, password auth).
  PostgreSQL refuses to run as root: as root the lab runs initdb and postgres as the `postgres`
  user that Debian's package creates (`Popen(user="postgres")`, what `runuser -u postgres` does).
- MLflow: `mlflow server --app-name basic-auth` on the `mlflow` database, users in `mlflow_auth`,
  artifacts proxied by the server into s3://BUCKET/mlflow. SQLAlchemy 2.1 reads postgresql:// URIs
  with psycopg (version 3), which the lab uses too. A third database, `optuna`, is for --optuna-storage.
- Ray: a head and worker nodes, each `ray start --block` with its own --temp-dir and ports, token
  authentication on (RAY_AUTH_MODE=token, the lab's own token file).
"""
from __future__ import annotations

import base64
import glob
import importlib.util
import os
import pwd
import re
import shutil
import sys
from pathlib import Path

from lab_processes import HOST, http_status

PG_USER = "postgres"  # the system user Debian's postgresql package creates
DB_USER = "mlflow"
MLFLOW_ADMIN = "admin"


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL (/usr/lib/postgresql/N/bin), else initdb's directory on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(n) for n in re.findall(r"\d+", p.split("/")[-3])])
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def ray_executable() -> str | None:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


def missing_requirements() -> list[str]:
    """What this machine lacks for the lab, one phrase each (empty when it has everything)."""
    missing = []
    if postgres_bindir() is None:
        missing.append("PostgreSQL (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            missing.append(f"the '{PG_USER}' user to run PostgreSQL as (root cannot; Debian's postgresql creates it)")
    for module, package in (("moto.server", "moto[server]"), ("flask_cors", "moto[server]"), ("boto3", "boto3"),
                            ("psycopg", "psycopg[binary]"), ("flask_wtf", "mlflow[auth]")):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            missing.append(f"the Python package {package}")
    if ray_executable() is None:
        missing.append("Ray's `ray` command")
    return sorted(set(missing))


def pg_user() -> str | None:
    """The user PostgreSQL runs as: `postgres` when we are root, else ourselves (None)."""
    return PG_USER if os.geteuid() == 0 else None


def reachable_by(path: Path, user: str | None) -> bool:
    """Whether `user` (None: ourselves) can enter every existing directory above `path` (e.g. not /root,
    mode 700); the lab creates those missing with mode 711."""
    if user is None:
        return True
    entry = pwd.getpwnam(user)
    for parent in path.resolve().parents:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == entry.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def own_by(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def initdb_argv(bindir: Path, data: Path, pwfile: Path) -> list[str]:
    return [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--locale=C", "-E", "UTF8", "--no-instructions"]


def postgres_argv(bindir: Path, data: Path, port: int) -> list[str]:
    # TCP on 127.0.0.1 only; no Unix socket, whose path could exceed 107 bytes under a deep lab dir.
    # A lab is throwaway: no fsync, no durable commits
    return [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c", f"listen_addresses={HOST}",
            "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off"]


def postgres_serves(port: int, password: str) -> bool:
    import psycopg

    try:
        psycopg.connect(host=HOST, port=port, user=DB_USER, password=password, dbname="postgres",
                        connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def create_databases(port: int, password: str, names: tuple[str, ...]) -> None:
    import psycopg

    # autocommit: CREATE DATABASE cannot run in a transaction
    with psycopg.connect(host=HOST, port=port, user=DB_USER, password=password, dbname="postgres",
                         autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")


def db_uri(port: int, password: str, name: str) -> str:
    return f"postgresql://{DB_USER}:{password}@{HOST}:{port}/{name}"


def moto_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def moto_serves(port: int) -> bool:
    return http_status(f"http://{HOST}:{port}/moto-api/") is not None


def create_bucket(env: dict[str, str], bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)


def write_auth_config(path: Path, auth_db_uri: str, admin_password: str) -> None:
    """MLflow's basic-auth settings (MLFLOW_AUTH_CONFIG_PATH): users in PostgreSQL, an admin of the lab's own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {auth_db_uri}\nadmin_username = {MLFLOW_ADMIN}\nadmin_password = {admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def mlflow_env(auth_config: Path, secret_key: str) -> dict[str, str]:
    """The server's own settings. Job execution off: it starts seven huey consumers (each importing
    MLflow: minutes of start-up on a loaded 2-core VM) for GenAI scoring jobs a study never runs."""
    return {"MLFLOW_AUTH_CONFIG_PATH": str(auth_config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_argv(port: int, backend_uri: str, bucket: str) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", HOST,
            "--port", str(port), "--workers", "1", "--backend-store-uri", backend_uri,
            "--artifacts-destination", f"s3://{bucket}/mlflow"]


def mlflow_serves(port: int, password: str) -> bool:
    """The REST API answers an authenticated search: the server, its database and the auth app are up."""
    token = base64.b64encode(f"{MLFLOW_ADMIN}:{password}".encode()).decode()
    url = f"http://{HOST}:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    return http_status(url, {"Authorization": f"Basic {token}"}) == 200


def ray_node_argv(temp_dir: Path, cpus: int, ports: dict[str, int], head_port: int, head: bool) -> list[str]:
    """`ray start --block` for one node; every port fixed, as several nodes share 127.0.0.1."""
    argv = [ray_executable(), "start", "--block", "--node-ip-address", HOST, "--num-cpus", str(cpus),
            "--num-gpus", "0", "--temp-dir", str(temp_dir), "--disable-usage-stats",
            "--object-store-memory", str(200 * 2**20)]
    argv += [f"--{flag}={port}" for flag, port in ports.items()]
    if head:
        return argv + ["--head", f"--port={head_port}", "--include-dashboard=false"]
    return argv + [f"--address={HOST}:{head_port}"]


RAY_NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                  "metrics-export-port", "node-manager-port", "object-manager-port")
RAY_HEAD_PORTS = ("dashboard-port",)
RAY_STARTED = "Ray runtime started"  # what `ray start` prints once its node has joined
