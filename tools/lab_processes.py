"""Processes of the cluster lab (tools/cluster_lab.py): start one, wait until it serves, stop it and all it spawned.

Each component runs in its own session (`Popen(start_new_session=True)`), its stdout and stderr
in one log file. Stopping signals the session's process group, then kills whatever still holds
the session id: Ray's raylet, agents and workers, MLflow's server workers and the postmaster's
children all stay in the session of the command that started them, and a session id cannot be
taken by a new process while one of its members lives, so nothing outside the lab is signalled.
Standard library only.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

HOST = "127.0.0.1"


class LabError(RuntimeError):
    """A component did not start: the message is one line naming it and its log file."""


def free_port(taken: set[int]) -> int:
    """A TCP port on HOST that nothing listens on now and the lab has not handed out yet."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def start(name: str, argv: list[str], log: Path, env: dict[str, str], user: str | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    """Start `argv` in a new session, stdout and stderr appended to `log`; as `user` when given (root only)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- cluster lab: starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, user=user, start_new_session=True)
        except OSError as e:
            raise LabError(f"{name} did not start: {argv[0]}: {e.strerror}; see {log}") from e


def run(name: str, argv: list[str], log: Path, env: dict[str, str], user: str | None = None,
        timeout: float = 120.0) -> None:
    """Run a set-up command (initdb) to its end, output appended to `log`; LabError if it fails."""
    proc = start(name, argv, log, env, user=user, cwd="/")
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_sessions({proc.pid: signal.SIGKILL}, grace=5.0)
        raise LabError(f"{name} did not finish in {timeout:.0f} s; see {log}") from None
    if code != 0:
        raise LabError(f"{name} failed (exit code {code}); see {log}")


def wait_ready(name: str, proc: subprocess.Popen, log: Path, ready: Callable[[], bool], deadline: float) -> None:
    """Poll `ready()` until it holds; LabError naming the component and its log if the process
    exits first or `deadline` (time.monotonic()) passes."""
    while True:
        code = proc.poll()
        if code is not None:
            raise LabError(f"{name} exited with code {code} while starting; see {log}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise LabError(f"{name} was not ready in time; see {log}")
        time.sleep(0.2)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def http_status(url: str, headers: dict[str, str] | None = None) -> int | None:
    """HTTP status of a GET (errors included), None when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def log_says(log: Path, text: str) -> bool:
    try:
        return text in log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def session_members(sid: int) -> list[int]:
    """PIDs of the live processes in session `sid` (field 6 of /proc/PID/stat); zombies left out."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_sessions(sessions: dict[int, int], grace: float = 15.0) -> list[int]:
    """Send each session's leader group its stop signal (session id -> signal), SIGKILL every member
    still alive after `grace` s; return the PIDs alive after that (an empty list is the goal)."""
    for sid, sig in sessions.items():
        try:
            os.killpg(sid, sig)
        except ProcessLookupError:
            pass  # the leader's group is gone; members left in its session are killed below
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(session_members(s) for s in sessions):
        time.sleep(0.2)
    for sid in sessions:
        _signal_all(session_members(sid), signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    left = [p for s in sessions for p in session_members(s)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for s in sessions for p in session_members(s)]
    return left
