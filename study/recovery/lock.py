"""One driver per study: a lock in the study directory, refused in one line naming its holder.

Two drivers on one study train the same trials into the same folders and log every epoch
twice. The lock is taken before the driver writes anything and held until it exits.

- Local paths (and NFS, where Linux maps flock to POSIX locks): `study.lock`, held with
  flock(2). The kernel drops it when the holder dies, even by SIGKILL, so a stale lock is
  taken over at once and safely; the file's JSON only says who holds it.
- Object stores (s3://, gs://, through pyarrow's filesystem): no locks exist there, so the
  holder keeps a lease `study.lease` alive with a heartbeat every HEARTBEAT_S seconds. A
  lease not renewed for LEASE_TTL_S seconds is stale (its holder died) and is taken over; so is
  one whose holder ran on this host and is gone from it, at once; `--take-over` takes any.
  Two drivers starting together both write a lease; each reads it back after SETTLE_S
  seconds and only the one whose lease survived (the store keeps the last write) goes on.
  Staleness compares wall clocks of two hosts: they must agree to well within
  LEASE_TTL_S - HEARTBEAT_S. The limit: pyarrow's filesystems offer no conditional write
  (S3's If-None-Match / If-Match), so two drivers whose writes and reads interleave within
  SETTLE_S could both go on; drivers started by people minutes apart never do.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Callable, Optional

from study.config import StudyError
from study.storage import StudyDir
from trainables.atomic_write import atomic_write_bytes

LOCK_FILE = "study.lock"
LEASE_FILE = "study.lease"
LEASE_TTL_S = 120.0
HEARTBEAT_S = 15.0
SETTLE_S = 2.0


class StudyLocked(StudyError):
    """Another live driver holds the study."""


def holder_info(token: str, clock: Callable[[], float] = time.time) -> dict:
    now = clock()
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": now, "heartbeat": now, "token": token}


def describe(holder: Optional[dict]) -> str:
    """'host HOST, PID N, since 2026-11-29 08:15:02 UTC' (or why the holder is unknown)."""
    if not holder:
        return "a holder that has not written its name yet"
    try:
        since = datetime.datetime.fromtimestamp(float(holder["since"]), datetime.timezone.utc)
        return f"host {holder['host']}, PID {holder['pid']}, since {since:%Y-%m-%d %H:%M:%S} UTC"
    except (KeyError, TypeError, ValueError):
        return "a holder whose lock file is unreadable"


def _refusal(path: str, holder: Optional[dict]) -> StudyLocked:
    return StudyLocked(f"another driver is running this study ({describe(holder)}; lock {path}); "
                       "wait for it to end or stop it, then re-run the same command")


def _parse(data: bytes) -> Optional[dict]:
    try:
        holder = json.loads(data.decode())
        return holder if isinstance(holder, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None


NAME_WAIT_S = 2.0  # the holder writes its name just after flock: how long a refused driver waits for it


def _named_and_alive(holder: Optional[dict]) -> bool:
    """A holder record of a live process (of another host: taken as it is)."""
    if not holder or "pid" not in holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _holder_once_named(fd: int, wait: float = NAME_WAIT_S) -> Optional[dict]:
    """The lock holder's record. A driver that has just taken the lock has not written it yet
    (the file is empty, or still names the dead previous holder): wait briefly for it."""
    deadline = time.monotonic() + wait
    while True:
        holder = _parse(os.pread(fd, 65536, 0))
        if _named_and_alive(holder) or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


class LocalLock:
    """flock(2) on `<directory>/study.lock`; released by the kernel when the process dies."""

    def __init__(self, directory: str, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.directory, self.path, self.log = directory, os.path.join(directory, LOCK_FILE), log
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by Ray's processes
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_once_named(fd)
                os.close(fd)
                raise _refusal(self.path, holder) from None
            try:  # a holder releasing unlinks the file: a lock on an unlinked file guards nothing
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _parse(os.pread(fd, 65536, 0))
        if previous and previous.get("pid") != os.getpid():
            self.log(f"taking over the lock of a driver that is no longer running ({describe(previous)})")
        data = json.dumps(holder_info(uuid.uuid4().hex)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a waiter then re-checks the inode (acquire)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


class LeaseLock:
    """A lease file with a heartbeat on any pyarrow filesystem (object stores)."""

    def __init__(self, fs, directory: str, ttl: float = LEASE_TTL_S, heartbeat: float = HEARTBEAT_S,
                 settle: float = SETTLE_S, clock: Callable[[], float] = time.time,
                 on_lost: Optional[Callable[[str], None]] = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.fs, self.directory, self.path = fs, directory, f"{directory.rstrip('/')}/{LEASE_FILE}"
        self.ttl, self.heartbeat, self.settle, self.clock, self.log = ttl, heartbeat, settle, clock, log
        self.on_lost = on_lost or _interrupt_driver
        self.token = uuid.uuid4().hex
        self._info: Optional[dict] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _read(self) -> Optional[dict]:
        import pyarrow.fs

        if self.fs.get_file_info(self.path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            return _parse(f.read()) or {}  # {}: unreadable (cut by a crash mid-write): stale

    def _write(self) -> None:
        import pyarrow.fs

        data = json.dumps(self._info).encode()
        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):  # its output stream empties the file first: a
            atomic_write_bytes(self.path, data)              # reader meanwhile would see a cut (stale) lease
            return
        with self.fs.open_output_stream(self.path) as f:  # one PUT on object stores: whole or nothing
            f.write(data)

    def _live(self, holder: Optional[dict]) -> bool:
        try:
            return bool(holder) and self.clock() - float(holder["heartbeat"]) < self.ttl
        except (KeyError, TypeError, ValueError):
            return False

    def acquire(self, take_over: bool = False) -> None:
        """Take the lease; a live holder's is refused unless `take_over` (--take-over: the user
        knows that driver is dead; a live one then stops at its next heartbeat)."""
        self.fs.create_dir(self.directory, recursive=True)
        current = self._read()
        dead_here = bool(current) and current.get("host") == socket.gethostname() and not _named_and_alive(current)
        if self._live(current) and not take_over and not dead_here:
            raise self._live_refusal(current)
        if current and self._live(current):
            why = "its process is gone from this host" if dead_here else "--take-over"
            self.log(f"taking over the study lease of {describe(current)} ({why})")
        elif current:
            self.log(f"taking over a stale study lease ({describe(current)}, no heartbeat for "
                     f"{self.clock() - float(current.get('heartbeat', 0)):.0f} s)")
        self._info = holder_info(self.token, self.clock)
        self._write()
        time.sleep(self.settle)  # a driver that started at the same moment wrote too: the store kept one
        survivor = self._read()
        if not survivor or survivor.get("token") != self.token:
            self._info = None
            raise _refusal(self.path, survivor)
        self._thread = threading.Thread(target=self._beat, name="study-lease-heartbeat", daemon=True)
        self._thread.start()

    def _live_refusal(self, holder: dict) -> StudyLocked:
        """The refusal with the lease's age: when it would be taken over by itself, and how now."""
        age = max(0.0, self.clock() - float(holder["heartbeat"]))
        return StudyLocked(
            f"another driver holds this study's lease ({describe(holder)}; {self.path}), last renewed {age:.0f} s ago; "
            f"a lease without a heartbeat for {self.ttl:.0f} s is stale, so if that driver is dead the same command "
            f"takes the study over in {max(0.0, self.ttl - age):.0f} s, or now with --take-over")

    def renew(self) -> bool:
        """One heartbeat; False (and on_lost called) if another driver took the lease over."""
        current = self._read()
        if not current or current.get("token") != self.token:
            self._info = None
            self.on_lost(f"the study lease was taken over by {describe(current)}; this driver stops")
            return False
        self._info = {**self._info, "heartbeat": self.clock()}
        self._write()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.renew():
                    return
            except OSError as err:  # a network hiccup: the lease survives up to ttl without beats
                self.log(f"warning: study lease heartbeat failed ({err}); retrying")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._info is not None:
            try:
                current = self._read()
                if current and current.get("token") == self.token:
                    self.fs.delete_file(self.path)
            except OSError:
                pass  # the lease then goes stale by itself
            self._info = None


def _interrupt_driver(message: str) -> None:
    """Another driver owns the study now: stop this one as a Ctrl-C would (its state stays resumable)."""
    import _thread

    print(f"python -m study.run: error: {message}", file=sys.stderr)
    _thread.interrupt_main()


def _drop_lone_driver_log(study_path: str) -> None:
    """A study directory this driver created that holds nothing but the driver log: the study wrote
    nothing, so the log (Ray's startup lines) goes with the directory."""
    from study.recovery import driver_log

    try:
        if os.listdir(study_path) != [driver_log.LOG_FILE]:
            return
        driver_log.restore()  # closes the log file
        os.unlink(os.path.join(study_path, driver_log.LOG_FILE))
    except OSError:
        pass


def _missing_dirs(path: str) -> list[str]:
    """The directories above and at `path` that do not exist yet, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path.rstrip("/"))
    return missing


@contextlib.contextmanager
def study_lock(study_dir: StudyDir, take_over: bool = False):
    """Hold the study's lock; a driver that ends having written nothing but the lock (and Ray's startup
    lines in its driver.log) leaves no directory behind (a refused GPU request, an unreachable MLflow server)."""
    created = _missing_dirs(study_dir.path) if study_dir.is_local else []
    if study_dir.is_local:
        lock = LocalLock(study_dir.path)
    else:
        fs, root = study_dir._fs()
        lock = LeaseLock(fs, root)
    try:
        lock.acquire(take_over=take_over) if isinstance(lock, LeaseLock) else lock.acquire()
    except OSError as err:
        raise StudyError(f"cannot lock the study directory {study_dir.path} ({type(err).__name__}: {err})") from None
    try:
        yield lock
    finally:
        lock.release()
        if created:
            _drop_lone_driver_log(created[0])
        for path in created:
            try:
                os.rmdir(path)
            except OSError:
                break  # not empty: the study wrote something
