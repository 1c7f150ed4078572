"""What a SIGKILLed driver's local Ray leaves is stopped by the next command, and nothing else is."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from study.recovery import leftovers
from tests.required import skip_unless_required
from tests.study.helpers import REPO


@pytest.fixture(autouse=True)
def linux_proc():
    if not os.path.isdir("/proc"):
        skip_unless_required("linux-proc", "the cleanup reads Linux's /proc")


def _sleeper(cwd, env=None):
    return subprocess.Popen(["sleep", "300"], cwd=cwd, env=env)


def _alive(proc) -> bool:
    return proc.poll() is None


def test_stops_the_processes_of_the_recorded_session_only(tmp_path):
    session = tmp_path / "session_2026-11-29_08-00-00_1_1"
    (session / "artifacts").mkdir(parents=True)
    study = tmp_path / "study"
    study.mkdir()
    worker = _sleeper(session / "artifacts")                    # a trial worker: works in the session dir
    served = _sleeper(tmp_path, {**os.environ, "RAY_RAYLET_PID": "999999"})  # an idle worker of the raylet
    recorded = _sleeper(tmp_path)                               # a head process, recorded by PID + start time
    stranger = _sleeper(tmp_path)                               # someone else's process
    reused = _sleeper(tmp_path)                                 # a recorded PID, since reused by another program
    try:
        doc = {"host": socket.gethostname(), "driver_pid": 1, "session_dir": str(session), "raylet_pid": 999999,
               "raylet_start": None, "started": {str(recorded.pid): leftovers.start_time(recorded.pid),
                                                 str(reused.pid): "1"}}
        (study / leftovers.RECORD).write_text(json.dumps(doc))
        said = []
        assert leftovers.stop_leftovers(str(study), said.append) == 3
        for proc in (worker, served, recorded):
            proc.wait(timeout=10)
        assert _alive(stranger) and _alive(reused)
        assert len(said) == 1 and said[0].startswith("stopped 3 processes of the local Ray a killed driver left")
        assert not (study / leftovers.RECORD).exists()
        assert leftovers.stop_leftovers(str(study), said.append) == 0, "nothing recorded: nothing stopped"
    finally:
        for proc in (worker, served, recorded, stranger, reused):
            proc.kill()
            proc.wait()


def test_another_hosts_record_is_left_alone(tmp_path):
    proc = _sleeper(tmp_path)
    try:
        doc = {"host": "elsewhere", "driver_pid": 1, "session_dir": str(tmp_path), "raylet_pid": None,
               "raylet_start": None, "started": {str(proc.pid): leftovers.start_time(proc.pid)}}
        (tmp_path / leftovers.RECORD).write_text(json.dumps(doc))
        assert leftovers.stop_leftovers(str(tmp_path), print) == 0 and _alive(proc)
    finally:
        proc.kill()
        proc.wait()


def test_a_driver_killed_while_ray_starts_leaves_nothing_untagged(tmp_path, monkeypatch):
    """tag_driver records the driver's tag before ray.init; a process that inherited it (a Ray
    process started before the session could be recorded) is stopped, one without it is not."""
    monkeypatch.setenv(leftovers.DRIVER_TAG_VAR, "")  # restored after the test; tag_driver sets it anew
    leftovers.tag_driver(str(tmp_path))
    tag = os.environ[leftovers.DRIVER_TAG_VAR]
    assert json.loads((tmp_path / leftovers.RECORD).read_text())["tag"] == tag
    doc = json.loads((tmp_path / leftovers.RECORD).read_text())
    doc["driver_pid"] = 1  # as if the tagging driver had died (this test process carries the tag too)
    (tmp_path / leftovers.RECORD).write_text(json.dumps(doc))
    started = _sleeper(tmp_path)  # inherits the tag, as Ray's processes do from the driver
    other = _sleeper(tmp_path, {k: v for k, v in os.environ.items() if k != leftovers.DRIVER_TAG_VAR})
    try:
        said = []
        assert leftovers.stop_leftovers(str(tmp_path), said.append) == 1
        started.wait(timeout=10)
        assert _alive(other) and "(session not yet started)" in said[0]
    finally:
        for proc in (started, other):
            proc.kill()
            proc.wait()


def _logging_sleeper(log_file, cwd):
    """A process like Ray's agents after setproctitle: no environment mark readable, its stdout a
    log file in the session directory."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        return subprocess.Popen(["sleep", "300"], cwd=cwd, stdout=out, env={"PATH": os.environ["PATH"]})


def test_a_process_holding_a_file_of_the_session_is_stopped(tmp_path):
    session = tmp_path / "ray" / "session_2026-11-29_08-00-00_1_4242"
    study = tmp_path / "study"
    study.mkdir()
    agent = _logging_sleeper(session / "logs" / "dashboard_agent.out", tmp_path)
    alike = _logging_sleeper(tmp_path / "ray" / "session_2026-11-29_08-00-00_1_42421" / "logs" / "a.out", tmp_path)
    try:
        doc = {"host": socket.gethostname(), "driver_pid": 4242, "session_dir": str(session), "raylet_pid": None,
               "raylet_start": None, "started": {}}
        (study / leftovers.RECORD).write_text(json.dumps(doc))
        assert leftovers.stop_leftovers(str(study), print) == 1
        agent.wait(timeout=10)
        assert _alive(alike), "a session whose name only starts alike is another's"
    finally:
        for proc in (agent, alike):
            proc.kill()
            proc.wait()


def test_before_the_session_is_recorded_its_name_identifies_it(tmp_path):
    """Killed inside ray.init: the record has the tag and its time only. A process holding a file of
    a session named after the driver's PID and started after the tag is stopped; a session of the
    same PID started before the tag (a PID reused since), or of another PID, is left alone."""
    tagged_at = datetime.datetime(2026, 11, 29, 8, 0, 0).timestamp()
    ray_dir = tmp_path / "ray"
    study = tmp_path / "study"
    study.mkdir()
    ours = _logging_sleeper(ray_dir / "session_2026-11-29_08-00-01_5_4242" / "logs" / "raylet.out", tmp_path)
    older = _logging_sleeper(ray_dir / "session_2026-11-29_07-59-50_5_4242" / "logs" / "raylet.out", tmp_path)
    other = _logging_sleeper(ray_dir / "session_2026-11-29_08-00-01_5_4243" / "logs" / "raylet.out", tmp_path)
    try:
        doc = {"host": socket.gethostname(), "driver_pid": 4242, "session_dir": None, "raylet_pid": None,
               "raylet_start": None, "started": {}, "tag": "4242-1", "tagged_at": tagged_at}
        (study / leftovers.RECORD).write_text(json.dumps(doc))
        assert leftovers.stop_leftovers(str(study), print) == 1
        ours.wait(timeout=10)
        assert _alive(older) and _alive(other)
    finally:
        for proc in (ours, older, other):
            proc.kill()
            proc.wait()


KILLED_DRIVER = """
import sys, time
import ray
from study.recovery import leftovers
from trainables.tune.tuner import connect, local_session_dir
leftovers.tag_driver(sys.argv[1])
connect(None)
if sys.argv[2] == "recorded":
    leftovers.record(sys.argv[1], leftovers.local_ray_processes(local_session_dir()))
@ray.remote(num_cpus=1)
def work():
    time.sleep(300)
running = [work.remote() for _ in range(2)]
time.sleep(3)  # the workers start
print("ready", flush=True)
time.sleep(300)
"""


def _session_members(sid: int) -> list[int]:
    """Processes of the driver's own session (setsid by the test; Ray's processes stay in it):
    a mark independent of what leftovers.py looks at."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and f.read().rsplit(")", 1)[1].split()[3] == str(sid):
                    found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found


def _settled(sid: int, quiet_s: float = 4.0, limit_s: float = 60.0) -> list[int]:
    """The session's members once they stop changing for `quiet_s`."""
    members, since, end = _session_members(sid), time.time(), time.time() + limit_s
    while time.time() - since < quiet_s and time.time() < end:
        time.sleep(0.5)
        now = _session_members(sid)
        if now != members:
            members, since = now, time.time()
    return members


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["recorded", "inside ray.init"])
def test_a_sigkilled_drivers_real_ray_is_stopped_whole(tmp_path, moment):
    """A real local Ray whose driver is SIGKILLed: its agents outlive the raylet (seen: ray::DashboardAgent
    and ray::RuntimeEnvAgent, their environment unreadable after setproctitle); the next command stops all."""
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's socket paths
    driver = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(tmp_path), moment.split()[0]], cwd=REPO,
                              env={**os.environ, "RAY_TMPDIR": ray_tmp}, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        members = _session_members(driver.pid)
        driver.kill()
        driver.wait()
        survivors = _settled(driver.pid)  # what dies with the driver (its workers, slowly under load) has died
        print(f"{moment}: {len(members)} processes, {len(survivors)} outlived the driver")
        said = []
        stopped = leftovers.stop_leftovers(str(tmp_path), said.append)
        assert stopped >= len(survivors), (said, survivors)
        wait = time.time() + 10
        while _session_members(driver.pid) and time.time() < wait:
            time.sleep(0.2)
        assert not _session_members(driver.pid), (said, _session_members(driver.pid))
    finally:
        for pid in _session_members(driver.pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
