"""The local Ray of a driver that was killed: found again and stopped by the next command.

A driver started with no --address starts its own Ray (GCS, raylet, dashboard, trial
workers). Killed by SIGKILL it cannot shut that Ray down. Each driver records its local
Ray in the study directory (`.local-ray.json`: session directory, raylet PID, the PIDs
and start times of its processes); the next command on the study, holding the study lock
(so the recorded driver is dead), stops every process of that Ray that still runs:
the recorded processes (same PID and start time: never a reused PID), and any process
working in the session directory, holding a file open in it (Ray's agents write their logs
there) or served by the recorded raylet (trial workers).

A driver killed while `ray.init` is still starting Ray has no session to record yet: before
it starts Ray it sets `DRIVER_TAG_VAR` (its PID and start time) in its environment, which
every process of its Ray inherits, and records the tag; a process carrying a dead driver's
tag is stopped too, and so is one working in or holding a file of a Ray session named after
the driver's PID and started after the tag (`session_<date>_<time>_<usec>_<driver PID>`).

Environment marks alone do not suffice: a Ray process that renames itself (setproctitle:
`ray::DashboardAgent`, `ray::RuntimeEnvAgent`, `ray::IDLE`) overwrites the memory that
/proc/PID/environ and /proc/PID/cmdline show, so its inherited variables may read as gone.
Its open files and working directory stay true. Linux only (/proc); elsewhere nothing is recorded.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import time
from typing import Callable, Optional

from trainables.atomic_write import atomic_write_bytes

RECORD = ".local-ray.json"
DRIVER_TAG_VAR = "SMOOTHING_STUDY_DRIVER"  # inherited by every process of a driver's local Ray
RESCANS, RESCAN_PAUSE_S = 3, 0.5
SESSION_NAME = re.compile(r"/session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)_\d+_(\d+)(?=/|$)")  # Ray's, local time


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
    record(study_path, {"session_dir": None, "raylet_pid": None, "pids": []}, tagged_at=time.time())


def record(study_path: str, ray_processes: dict, tagged_at: Optional[float] = None) -> None:
    if not ray_processes or not os.path.isdir("/proc"):
        return
    started = {str(pid): start_time(pid) for pid in ray_processes["pids"]}
    doc = {"host": socket.gethostname(), "driver_pid": os.getpid(), "session_dir": ray_processes["session_dir"],
           "raylet_pid": ray_processes["raylet_pid"], "raylet_start": start_time(ray_processes["raylet_pid"] or 0),
           "started": started, "tag": os.environ.get(DRIVER_TAG_VAR), "tagged_at": tagged_at}
    atomic_write_bytes(os.path.join(study_path, RECORD), json.dumps(doc).encode())


def local_ray_processes(session_dir: Optional[str]) -> dict:
    """{"session_dir", "raylet_pid", "pids"} of the local Ray whose session directory is `session_dir`
    (trainables/tune/tuner.py: local_session_dir), found in /proc as leftover_pids finds a dead
    driver's: every process working in the session directory or holding a file open in it; {} when
    there is none (a cluster) or no /proc. Ray's public API names no PIDs."""
    if not session_dir or not os.path.isdir("/proc"):
        return {}
    doc = {"session_dir": session_dir, "raylet_pid": None, "started": {}, "tag": None, "tagged_at": None}
    pids = leftover_pids(doc)
    raylet = next((pid for pid in pids if _is_raylet(pid)), None)
    return {"session_dir": session_dir, "raylet_pid": raylet, "pids": pids}


def _is_raylet(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            program = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(program.decode(errors="replace")) == "raylet"


def _paths(pid: int) -> list[str]:
    """The process's command line, working directory and open files (what setproctitle cannot hide
    besides the command line)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        paths = [f.read().replace(b"\0", b" ").decode(errors="replace"), os.readlink(f"/proc/{pid}/cwd")]
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            paths.append(os.readlink(os.path.join(fd_dir, fd)))
        except OSError:  # closed meanwhile
            pass
    return paths


def _names_session(path: str, doc: dict) -> bool:
    """Whether `path` lies in the dead driver's Ray session: the recorded one, or, before it was
    recorded, one named after the driver's PID and started after its tag."""
    if doc["session_dir"]:  # the directory itself or anything in it, not a longer name that starts alike
        return re.search(re.escape(doc["session_dir"]) + r"(?![^/\s])", path) is not None
    if not doc.get("tagged_at"):
        return False
    for match in SESSION_NAME.finditer(path):
        started = datetime.datetime.strptime(match[1], "%Y-%m-%d_%H-%M-%S").timestamp()
        if int(match[2]) == doc["driver_pid"] and started >= doc["tagged_at"] - 1:
            return True
    return False


def _belongs(pid: int, doc: dict, raylet_reused: bool) -> bool:
    tag = doc.get("tag")
    try:
        if any(_names_session(path, doc) for path in _paths(pid)):
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
