"""`python3 tools/cluster_lab.py up|down|status|env`: the cluster path on one machine, real components only.

`up` starts, all on 127.0.0.1 and each on a free port: an S3 API server (moto) with one bucket,
PostgreSQL, an MLflow server (basic auth, runs in PostgreSQL, artifacts in the bucket) and a Ray
head with worker nodes (`ray start`, one process each). It prints its start-up time, the
environment to export and the study command. `env` prints the export lines again
(`eval "$(python3 tools/cluster_lab.py env)"`), `status` each component, `down` stops everything
`up` started and deletes the lab's data (moto keeps its objects in memory: they go too); the logs
stay in LAB/logs. The lab's state (PIDs, ports, generated passwords) is LAB/state.json, mode 600.
How each component is run: tools/lab_components.py; processes: tools/lab_processes.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import lab_components as comp
from lab_processes import (HOST, LabError, free_port, log_says, run, session_members, start, stop_sessions,
                           wait_ready)

DEFAULT_DIR = Path.home() / ".cache" / "smoothing-lab"
PROG = "cluster_lab"
RAY_TEMP_MAX = 45  # Ray puts Unix sockets at TEMP/session_<date>_<pid>/sockets/plasma_store: 107 bytes at most


def state_path(lab: Path) -> Path:
    return lab / "state.json"


def load_state(lab: Path) -> dict | None:
    try:
        return json.loads(state_path(lab).read_text())
    except FileNotFoundError:
        return None


def save_state(lab: Path, state: dict) -> None:
    tmp = lab / "state.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the lab's passwords
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, state_path(lab))


def alive(state: dict) -> dict[str, bool]:
    return {p["name"]: bool(session_members(p["pid"])) for p in state["procs"]}


def dir_flag(lab: Path) -> str:
    return "" if lab == DEFAULT_DIR.resolve() else f" --dir {shlex.quote(str(lab))}"


def export_lines(state: dict) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in state["env"].items())


def scratch_dirs(lab: Path) -> tuple[Path, Path]:
    """(PostgreSQL's parent dir, Ray's temp root): inside the lab where the postgres user can reach it
    and Ray's socket paths fit, else under /tmp/smoothing-lab-<hash of the lab dir>."""
    fallback = Path(tempfile.gettempdir()) / f"smoothing-lab-{hashlib.sha1(str(lab).encode()).hexdigest()[:8]}"
    pg = lab / "postgres" if comp.reachable_by(lab / "postgres", comp.pg_user()) else fallback / "postgres"
    ray = lab / "ray" if len(str(lab / "ray" / "worker-99")) <= RAY_TEMP_MAX else fallback / "ray"
    return pg, ray


def lab_env(ports: dict[str, int], mlflow_password: str, pg_password: str, token_path: Path) -> dict[str, str]:
    """What a client of the lab exports: S3 endpoint and keys, MLflow URI and login, Ray address and token,
    PostgreSQL's password."""
    s3 = f"http://{HOST}:{ports['s3']}"
    return {"AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "lab-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3,
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports['mlflow']}",
            "MLFLOW_TRACKING_USERNAME": comp.MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD": mlflow_password,
            "RAY_ADDRESS": f"{HOST}:{ports['ray']}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
            "PGPASSWORD": pg_password}  # libpq's: --optuna-storage URLs name no password (study.json stores them)


def study_command(state: dict) -> str:
    env = state["env"]
    return (f"python3 -m study.run --space noise_sweep --smoke-test --storage-path s3://{state['bucket']}/studies "
            f"--mlflow-uri {env['MLFLOW_TRACKING_URI']} --address {env['RAY_ADDRESS']} "
            f"--optuna-storage {optuna_url(state)}")


def optuna_url(state: dict) -> str:
    return f"postgresql://{comp.DB_USER}@{HOST}:{state['ports']['postgres']}/optuna"


def bring_up(lab: Path, args: argparse.Namespace, state: dict) -> None:
    """Start every component, recording each process in `state` (saved) as soon as it runs."""
    deadline = time.monotonic() + args.timeout
    logs, pg_parent, ray_root = lab / "logs", Path(state["pg_dir"]), Path(state["ray_dir"])
    ports, env, user = state["ports"], state["env"], comp.pg_user()
    base = {**os.environ, **env}
    base.pop("RAY_ADDRESS")  # a node's RAY_ADDRESS would point `ray start --head` at itself

    def launch(name: str, argv: list[str], sig: int = signal.SIGTERM, **kw):
        proc = start(name, argv, logs / f"{name}.log", base, **kw)
        state["procs"].append({"name": name, "pid": proc.pid, "log": str(logs / f"{name}.log"), "signal": sig})
        save_state(lab, state)
        return proc

    def ready(name, proc, check):
        wait_ready(name, proc, logs / f"{name}.log", check, deadline)

    moto = launch("s3-moto", comp.moto_argv(ports["s3"]))
    head_ports = {f: ports[f"head:{f}"] for f in comp.RAY_NODE_PORTS + comp.RAY_HEAD_PORTS}
    head = launch("ray-head", comp.ray_node_argv(ray_root / "head", args.cpus_per_node, head_ports, ports["ray"], True))
    bindir = comp.postgres_bindir()
    pwfile = pg_parent / "pwfile"
    pwfile.write_text(state["secrets"]["postgres"] + "\n")
    comp.own_by(pwfile, user)
    run("postgres-initdb", comp.initdb_argv(bindir, pg_parent / "data", pwfile), logs / "postgres.log", base, user)
    pwfile.unlink()
    # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to disconnect)
    pg = launch("postgres", comp.postgres_argv(bindir, pg_parent / "data", ports["postgres"]), signal.SIGINT,
                user=user, cwd="/")
    ready("s3-moto", moto, lambda: comp.moto_serves(ports["s3"]))
    comp.create_bucket(env, state["bucket"])
    pg_password = state["secrets"]["postgres"]
    ready("postgres", pg, lambda: comp.postgres_serves(ports["postgres"], pg_password))
    comp.create_databases(ports["postgres"], pg_password, ("mlflow", "mlflow_auth", "optuna"))
    ini = lab / "mlflow" / "basic_auth.ini"
    comp.write_auth_config(ini, comp.db_uri(ports["postgres"], pg_password, "mlflow_auth"),
                           env["MLFLOW_TRACKING_PASSWORD"])
    server_env = comp.mlflow_env(ini, state["secrets"]["flask"])
    base.update(server_env)
    mlflow = launch("mlflow", comp.mlflow_argv(ports["mlflow"], comp.db_uri(ports["postgres"], pg_password, "mlflow"),
                                               state["bucket"]))
    for k in server_env:
        base.pop(k)
    ready("ray-head", head, lambda: log_says(logs / "ray-head.log", comp.RAY_STARTED))
    workers = []
    for i in range(1, args.workers + 1):
        node_ports = {f: ports[f"worker-{i}:{f}"] for f in comp.RAY_NODE_PORTS}
        argv = comp.ray_node_argv(ray_root / f"worker-{i}", args.cpus_per_node, node_ports, ports["ray"], False)
        workers.append((f"ray-worker-{i}", launch(f"ray-worker-{i}", argv)))
    ready("mlflow", mlflow, lambda: comp.mlflow_serves(ports["mlflow"], env["MLFLOW_TRACKING_PASSWORD"]))
    for name, proc in workers:
        ready(name, proc, lambda name=name: log_says(logs / f"{name}.log", comp.RAY_STARTED))


def new_state(lab: Path, args: argparse.Namespace) -> dict:
    taken: set[int] = set()
    ports = {k: free_port(taken) for k in ("s3", "postgres", "mlflow", "ray")}
    for f in comp.RAY_NODE_PORTS + comp.RAY_HEAD_PORTS:
        ports[f"head:{f}"] = free_port(taken)
    for i in range(1, args.workers + 1):
        for f in comp.RAY_NODE_PORTS:
            ports[f"worker-{i}:{f}"] = free_port(taken)
    pg_dir, ray_dir = scratch_dirs(lab)
    token_path = lab / "ray-auth-token"
    pg_password = secrets.token_urlsafe(18)
    return {"dir": str(lab), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bucket": args.bucket, "workers": args.workers, "cpus_per_node": args.cpus_per_node, "ports": ports,
            "pg_dir": str(pg_dir), "ray_dir": str(ray_dir), "procs": [],
            "secrets": {"postgres": pg_password, "flask": secrets.token_hex(32)},
            "env": lab_env(ports, secrets.token_urlsafe(18), pg_password, token_path)}


def prepare_dirs(lab: Path, state: dict) -> None:
    """Empty data dirs for a fresh lab (a lab is throwaway); PostgreSQL's owned by the user it runs as."""
    lab.mkdir(parents=True, exist_ok=True, mode=0o711)  # enterable by the postgres user; state.json is 600
    if (lab / "logs").exists():  # readiness reads the logs: the last lab's go to logs.previous
        shutil.rmtree(lab / "logs.previous", ignore_errors=True)
        (lab / "logs").rename(lab / "logs.previous")
    pg, ray = Path(state["pg_dir"]), Path(state["ray_dir"])
    for d in (pg, ray):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, mode=0o700)
    if pg.parent != lab:
        pg.parent.chmod(0o711)  # the fallback dir under /tmp: the postgres user must enter it
    comp.own_by(pg, comp.pg_user())
    token = Path(state["env"]["RAY_AUTH_TOKEN_PATH"])
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def summary(state: dict, lab: Path) -> str:
    p, env = state["ports"], state["env"]
    where = "as the postgres user" if comp.pg_user() else "as this user"
    return "\n".join([
        f"cluster lab up in {state['startup_s']:.1f} s, in {lab} (logs: {lab / 'logs'}):",
        f"  S3 (moto)   {env['AWS_ENDPOINT_URL']}  bucket {state['bucket']}",
        f"  PostgreSQL  {HOST}:{p['postgres']}  databases mlflow, mlflow_auth, optuna ({where}; data in "
        f"{state['pg_dir']})",
        f"  Optuna      {optuna_url(state)}  (--optuna-storage; optuna-dashboard reads it too)",
        f"  MLflow      {env['MLFLOW_TRACKING_URI']}  basic auth, artifacts in s3://{state['bucket']}/mlflow",
        f"  Ray         head {env['RAY_ADDRESS']} + {state['workers']} worker nodes, {state['cpus_per_node']} CPU each"
        f" (temp dirs in {state['ray_dir']})",
        f'# the environment (again with: eval "$(python3 tools/cluster_lab.py env{dir_flag(lab)})"):',
        export_lines(state),
        "# the study, from this checkout:",
        study_command(state),
        f"# stop everything: python3 tools/cluster_lab.py down{dir_flag(lab)}"])


def cmd_up(lab: Path, args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", args.bucket):
        return fail(f"--bucket {args.bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)", 2)
    if args.workers < 0 or args.cpus_per_node < 1 or args.timeout <= 0:
        return fail("--workers must be >= 0, --cpus-per-node >= 1 and --timeout > 0", 2)
    missing = comp.missing_requirements()
    if missing:
        return fail("this machine lacks " + "; ".join(missing), 2)
    old = load_state(lab)
    if old is not None:
        up = alive(old)
        if up and all(up.values()):
            print(f"cluster lab already up in {lab} since {old['started']}: nothing started")
            print(summary(old, lab).split("\n", 1)[1])
            return 0
        if any(up.values()):
            down_ones = ", ".join(n for n, ok in up.items() if not ok)
            return fail(f"the lab in {lab} is partly up ({down_ones} not running): run down{dir_flag(lab)} first", 1)
        clear(lab, old)
    state = new_state(lab, args)
    prepare_dirs(lab, state)
    save_state(lab, state)
    t0 = time.monotonic()
    try:
        bring_up(lab, args, state)
    except (LabError, KeyboardInterrupt, Exception) as e:
        reason = str(e) if isinstance(e, LabError) else f"interrupted during start-up ({type(e).__name__}: {e})"
        print(f"{PROG}: error: {reason}; stopping the rest", file=sys.stderr, flush=True)
        stop_lab(lab, state)
        return 1
    state["startup_s"] = round(time.monotonic() - t0, 2)
    save_state(lab, state)
    print(summary(state, lab))
    return 0


def clear(lab: Path, state: dict) -> None:
    """Delete the lab's data (PostgreSQL's cluster, Ray's temp dirs, the fallback dir) and state; keep the logs."""
    for key in ("pg_dir", "ray_dir"):
        d = Path(state[key])
        shutil.rmtree(d, ignore_errors=True)
        if d.parent != lab and d.parent.exists() and not any(d.parent.iterdir()):
            d.parent.rmdir()
    for f in (state_path(lab), lab / "ray-auth-token", lab / "mlflow" / "basic_auth.ini"):
        f.unlink(missing_ok=True)


def stop_lab(lab: Path, state: dict) -> list[int]:
    left = stop_sessions({p["pid"]: p["signal"] for p in state["procs"]}, grace=10.0)
    if not left:
        clear(lab, state)
    return left


def cmd_down(lab: Path, args: argparse.Namespace) -> int:
    state = load_state(lab)
    if state is None:
        print(f"no cluster lab in {lab}: nothing to stop")
        return 0
    left = stop_lab(lab, state)
    if left:
        return fail(f"processes of the lab still alive after SIGKILL: {left}; state kept in {state_path(lab)}", 1)
    print(f"cluster lab in {lab} stopped ({len(state['procs'])} components, nothing left running); "
          f"logs kept in {lab / 'logs'}")
    return 0


def cmd_status(lab: Path, args: argparse.Namespace) -> int:
    state = load_state(lab)
    if state is None:
        return fail(f"no cluster lab in {lab}", 1)
    up = alive(state)
    for p in state["procs"]:
        print(f"{p['name']:<14} {'running' if up[p['name']] else 'STOPPED':<8} pid {p['pid']:<8} log {p['log']}")
    print(f"{sum(up.values())}/{len(up)} running; ports: " + ", ".join(
        f"{k} {v}" for k, v in state["ports"].items() if ":" not in k))
    return 0 if all(up.values()) else 1


def cmd_env(lab: Path, args: argparse.Namespace) -> int:
    state = load_state(lab)
    if state is None or not all(alive(state).values()):
        return fail(f"no running cluster lab in {lab}: python3 tools/cluster_lab.py up{dir_flag(lab)}", 1)
    print(export_lines(state))
    return 0


def fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 tools/cluster_lab.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start the lab"), ("down", "stop everything up started"),
                       ("status", "each component: running or not"), ("env", "the export lines")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the lab directory (default: {DEFAULT_DIR})")
        if name == "up":
            p.add_argument("--bucket", default="lab", help="the S3 bucket (default: lab)")
            p.add_argument("--workers", type=int, default=2, help="Ray worker nodes besides the head (default: 2)")
            p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each Ray node offers (default: 1)")
            p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole start-up (default: 300)")
    args = parser.parse_args(argv)
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}[args.command]
    return handler(args.dir.expanduser().resolve(), args)


if __name__ == "__main__":
    sys.exit(main())
