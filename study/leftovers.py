"""The local Ray of a driver that was killed: found again and stopped by the next command.

A driver started with no --address starts its own Ray (GCS, raylet, dashboard, trial
workers). Killed by SIGKILL it cannot shut that Ray down. Each driver records its local
Ray in the study directory (`.local-ray.json`: session directory, raylet PID, the PIDs
and start times of its processes); the next command on the study, holding the study lock
(so the recorded driver is dead), stops every process of that Ray that still runs:
the recorded processes (same PID and start time: never a reused PID), and any process
working in the session directory or served by the recorded raylet (trial workers).

A driver killed while `ray.init` is still starting Ray has no session to record yet: before
it starts Ray it sets `DRIVER_TAG_VAR` (its PID and start time) in its environment, which
every process of its Ray inherits, and records the tag; a process carrying a dead driver's
tag is stopped too. Linux only (/proc); elsewhere nothing is recorded.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Callable, Optional

from study.atomic import atomic_write_bytes

RECORD = ".local-ray.json"
DRIVER_TAG_VAR = "SMOOTHING_STUDY_DRIVER"  # inherited by every process of a driver's local Ray
RESCANS, RESCAN_PAUSE_S = 3, 0.5


def start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def tag_driver(study_path: str) -> None:
    """Before this driver starts a local Ray: tag its environment (inherited by every Ray process)
    and record the tag, so that a kill during `ray.init` leaves nothing the next command misses."""
    if not os.path.isdir("/proc"):
        return
    os.environ[DRIVER_TAG_VAR] = f"{os.getpid()}-{start_time(os.getpid())}"
    record(study_path, {"session_dir": None, "raylet_pid": None, "pids": []})


def record(study_path: str, ray_processes: dict) -> None:
    if not ray_processes or not os.path.isdir("/proc"):
        return
    started = {str(pid): start_time(pid) for pid in ray_processes["pids"]}
    doc = {"host": socket.gethostname(), "driver_pid": os.getpid(), "session_dir": ray_processes["session_dir"],
           "raylet_pid": ray_processes["raylet_pid"], "raylet_start": start_time(ray_processes["raylet_pid"] or 0),
           "started": started, "tag": os.environ.get(DRIVER_TAG_VAR)}
    atomic_write_bytes(os.path.join(study_path, RECORD), json.dumps(doc).encode())


def _belongs(pid: int, doc: dict, raylet_reused: bool) -> bool:
    session, tag = doc["session_dir"], doc.get("tag")
    try:
        if session:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if session.encode() in f.read():
                    return True
            if os.readlink(f"/proc/{pid}/cwd").startswith(session):
                return True
        marks = [f"{DRIVER_TAG_VAR}={tag}".encode()] if tag else []
        if doc["raylet_pid"] and not raylet_reused:
            marks.append(f"RAY_RAYLET_PID={doc['raylet_pid']}".encode())
        if marks:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environment = f.read().split(b"\0")
            return any(mark in environment for mark in marks)
    except OSError:  # gone, or not ours to read
        return False
    return False


def leftover_pids(doc: dict) -> list[int]:
    me = os.getpid()
    raylet = doc.get("raylet_pid")
    raylet_reused = bool(raylet) and start_time(raylet) not in (None, doc.get("raylet_start"))
    found = {int(p) for p, t in doc["started"].items() if t is not None and start_time(int(p)) == t}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _belongs(int(entry), doc, raylet_reused):
            found.add(int(entry))
    found.discard(me)
    return sorted(found)


def stop_leftovers(study_path: str, log: Callable[[str], None]) -> int:
    """Kill what a dead driver's local Ray left running; the number of processes stopped."""
    path = os.path.join(study_path, RECORD)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return 0
    if doc.get("host") != socket.gethostname() or doc.get("driver_pid") == os.getpid():
        return 0  # another host's processes are not in this /proc
    pids: list[int] = []
    for _ in range(RESCANS):  # again after a pause: a dying raylet may have just started a worker
        found = [pid for pid in leftover_pids(doc) if pid not in pids]
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        pids += found
        time.sleep(RESCAN_PAUSE_S)
    if pids:
        log(f"stopped {len(pids)} processes of the local Ray a killed driver left running "
            f"(session {os.path.basename(doc['session_dir'] or 'not yet started')})")
    os.unlink(path)
    return len(pids)


def forget(study_path: str) -> None:
    try:
        os.unlink(os.path.join(study_path, RECORD))
    except FileNotFoundError:
        pass
