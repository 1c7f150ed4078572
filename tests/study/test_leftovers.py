"""What a SIGKILLed driver's local Ray leaves is stopped by the next command, and nothing else is."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from study import leftovers

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")


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
