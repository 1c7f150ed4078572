"""One driver per study: a second one is refused in one line naming the holder; a dead holder's
lock is taken over. Local flock and the heartbeat lease through pyarrow's filesystem."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow.fs
import pytest

from study.config import StudyError
from study.recovery.lock import LEASE_FILE, LOCK_FILE, LeaseLock, LocalLock, StudyLocked, holder_info, study_lock
from study.run import main
from study.storage import StudyDir
from tests.study.helpers import REPO

HOLD = """
import sys, time
from study.recovery.lock import LocalLock
LocalLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of study `s` under tmp_path."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "s")], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_second_driver_is_refused_naming_the_holder(capsys, tmp_path, holder):
    code = main(["--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path), "--name", "s"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("python -m study.run: error: another driver is running this study (host "
                               f"{socket.gethostname()}, PID {holder.pid}, since 20"), lines
    assert " UTC; lock " in lines[0] and "re-run the same command" in lines[0]
    assert sorted(os.listdir(tmp_path / "s")) == [LOCK_FILE], "the refused driver wrote nothing"


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, holder):
    with pytest.raises(StudyLocked):
        LocalLock(str(tmp_path / "s")).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    said = []
    lock = LocalLock(str(tmp_path / "s"), log=said.append)
    lock.acquire()  # the kernel released the dead holder's flock
    assert len(said) == 1 and f"PID {holder.pid}" in said[0] and "no longer running" in said[0]
    info = json.loads((tmp_path / "s" / LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    lock.release()
    assert not (tmp_path / "s" / LOCK_FILE).exists()


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    first, second = LocalLock(str(tmp_path)), LocalLock(str(tmp_path))
    first.acquire()
    with pytest.raises(StudyLocked, match=f"PID {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()  # after a release (which unlinks the file) the next driver gets a fresh lock
    second.release()


def test_lock_leaves_no_directory_when_nothing_was_written(tmp_path):
    study = StudyDir(str(tmp_path / "new" / "deeper"), "s")
    with study_lock(study):
        assert os.path.exists(os.path.join(study.path, LOCK_FILE))
    assert not (tmp_path / "new").exists()
    with study_lock(study):
        open(os.path.join(study.path, "study.json"), "w").close()
    assert sorted(os.listdir(study.path)) == ["study.json"]


def test_unlockable_path_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match="cannot lock the study directory"):
        with study_lock(StudyDir(str(tmp_path / "file"), "s")):
            pass


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def _lease(tmp_path, clock=time.time, **kw):
    kw.setdefault("settle", 0.05)
    kw.setdefault("heartbeat", 3600)
    return LeaseLock(pyarrow.fs.LocalFileSystem(), str(tmp_path / "s"), clock=clock, log=lambda m: None, **kw)


def test_lease_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    clock = Clock()
    lost = []
    first = _lease(tmp_path, clock, on_lost=lost.append)
    first.acquire()
    second = _lease(tmp_path, clock)
    clock.now += 60  # < ttl: still live
    with pytest.raises(StudyLocked, match=f"PID {os.getpid()}, since 2027-01-15 08:00:00 UTC"):
        second.acquire()
    assert first.renew() and lost == []
    clock.now += 60 + 1  # renewed at +60: +121 is 61 s without a heartbeat: live
    with pytest.raises(StudyLocked):
        second.acquire()
    clock.now += 120  # 181 s since the last heartbeat > ttl: the holder is dead
    second.acquire()
    assert not first.renew() and len(lost) == 1 and "taken over" in lost[0]
    first.release()  # must not delete the new holder's lease
    assert json.loads((tmp_path / "s" / LEASE_FILE).read_text())["token"] == second.token
    second.release()
    assert not (tmp_path / "s" / LEASE_FILE).exists()


def test_lease_heartbeat_renews(tmp_path):
    lease = _lease(tmp_path, heartbeat=0.1)
    lease.acquire()
    first = json.loads((tmp_path / "s" / LEASE_FILE).read_text())["heartbeat"]
    time.sleep(0.5)
    later = json.loads((tmp_path / "s" / LEASE_FILE).read_text())["heartbeat"]
    lease.release()
    assert later > first


def test_a_reader_never_sees_a_half_written_lease_on_a_local_disk(tmp_path):
    """pyarrow's local output stream empties a file before writing it; a lease read meanwhile would be cut,
    i.e. stale, and a second driver would take a live study over (the lease writes atomically instead)."""
    lease = _lease(tmp_path)
    lease.acquire()
    seen, done = [], threading.Event()

    def read():
        while not done.is_set():
            seen.append(lease._read())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            lease.renew()
    finally:
        done.set()
        reader.join()
        lease.release()
    assert seen and all(holder and holder["token"] == lease.token for holder in seen), \
        sum(not holder for holder in seen)


@pytest.mark.slow  # waits out a 6 s settle time
def test_simultaneous_leases_admit_exactly_one(tmp_path):
    barrier, outcomes = threading.Barrier(3), []

    def start():
        # The lease admits one of drivers that start together when each one's read-to-write gap is
        # under the settle time (study/recovery/lock.py). 2 s (production) failed twice here at load ~30, a
        # thread descheduled for longer; 6 s keeps this test about the rule, not about the load.
        lease = _lease(tmp_path, settle=6.0)
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append(lease)
        except StudyLocked:
            outcomes.append(None)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1, outcomes
    winners[0].release()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_drivers_started_together(tmp_path):
    """The reported race: two drivers at the same moment. One is refused in one line, before it
    creates anything (the MLflow database among it); the other goes on."""
    from tests.study.helpers import kill_session, study_cmd

    cmd = study_cmd(tmp_path, "twice", "--space", "noise_sweep", "--smoke-test")
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = next(p for p in procs if p.poll() is not None)
        other = next(p for p in procs if p is not refused)
        err = refused.stderr.read().strip().splitlines()
        assert refused.returncode == 2 and len(err) == 1, err
        assert err[0].startswith("python -m study.run: error: another driver is running this study (host ")
        assert f"PID {other.pid}, since " in err[0], err
        assert other.poll() is None, "the holder goes on"
    finally:
        for p in procs:
            kill_session(p.pid)
            p.wait()


def test_a_refused_driver_waits_for_the_new_holder_to_write_its_name(tmp_path):
    """Just after flock the file still names the dead previous holder (or nothing): the refusal
    waits for the live holder's record instead of naming the dead one."""
    from study.recovery import lock

    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "study.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0.0}))
    live = {"host": socket.gethostname(), "pid": os.getpid(), "since": 1.0}
    writer = threading.Timer(0.3, lambda: path.write_text(json.dumps(live)))
    writer.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert lock._holder_once_named(fd)["pid"] == os.getpid()
        assert lock._holder_once_named(fd, wait=0.0)["pid"] == os.getpid()
    finally:
        os.close(fd)
        writer.join()
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert lock._holder_once_named(fd, wait=0.2) is None, "nobody named within the wait: said so"
    finally:
        os.close(fd)


def test_a_refused_lease_says_its_age_when_it_goes_stale_and_how_to_take_it_now(tmp_path):
    clock = Clock()
    lost = []
    first = _lease(tmp_path, clock, on_lost=lost.append)
    first.acquire()
    clock.now += 45
    second = _lease(tmp_path, clock)
    with pytest.raises(StudyLocked) as refused:
        second.acquire()
    message = str(refused.value)
    assert "last renewed 45 s ago" in message and "takes the study over in 75 s" in message, message
    assert "--take-over" in message
    second.acquire(take_over=True)  # the user knows the first driver is dead
    assert not first.renew() and "taken over" in lost[0]
    second.release()


def test_a_lease_of_a_dead_driver_on_this_host_is_taken_over_at_once(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {**holder_info("old"), "pid": dead.pid}  # renewed just now, by a process that is gone
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / LEASE_FILE).write_text(json.dumps(holder))
    said = []
    lease = LeaseLock(pyarrow.fs.LocalFileSystem(), str(tmp_path / "s"), settle=0.05, heartbeat=3600, log=said.append)
    lease.acquire()
    assert said and "its process is gone from this host" in said[0]
    lease.release()
    (tmp_path / "s" / LEASE_FILE).write_text(json.dumps({**holder_info("live")}))  # this very process: alive
    with pytest.raises(StudyLocked):
        _lease(tmp_path).acquire()
