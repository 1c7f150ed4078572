"""The last good copy of Ray Tune's experiment state, and the fall-back to it on resume.

Tune copies its state files (experiment_state-*.json, searcher-state-*.pkl, ...) into the
study directory in place: a full disk or a SIGKILL mid-copy leaves a cut file (a full disk
left experiment_state at 8,192 bytes), and every resume then fails. While a study runs, a
driver thread copies the state files, once they are complete and settled, into
`.tune-state-backup/<n>/`; on resume a damaged state is replaced by the newest such copy.
Local study directories only: an object store replaces an object whole on upload.

Complete means: a JSON file parses; a pickle's opcodes run to its STOP (read with
pickletools, nothing is executed). Settled means: no file changed while it was copied and
none in the last SETTLE_S seconds, so Tune's copy (a few small files, well under a
second) was not midway, and the searcher's and the experiment's state belong together.
"""
from __future__ import annotations

import fnmatch
import json
import os
import pickletools
import shutil
import threading
import time
from typing import Callable, Optional

from trainables.atomic_write import atomic_write_bytes
from study.config import StudyError

BACKUP_DIR = ".tune-state-backup"
DAMAGED_DIR = ".tune-state-damaged"
COMPLETE = "COMPLETE"      # written last into a backup: a backup without it is partial
KEEP = 2                   # backups kept (the newest is used; one older in case it goes bad)
SETTLE_S = 2.0
# Ray Tune's state files at the top of the experiment directory (checked against Ray's own
# constants by tests/trainables/test_tune_internals.py).
STATE_PATTERNS = ("tuner.pkl", "trainable.pkl", "experiment_state-*.json", "searcher-state-*.pkl",
                  "callback-states-*.pkl", "basic-variant-state-*.json", "search_gen_state-*.json")
EXPERIMENT_STATE = "experiment_state-*.json"


def state_files(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in STATE_PATTERNS)
                  and os.path.isfile(os.path.join(directory, n)))


def damage(path: str) -> Optional[str]:
    """Why the state file at `path` is unusable (cut, empty, not JSON), or None if complete."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return "empty"
    try:
        if data[0] != 0x80:  # no pickle PROTO opcode: JSON (search_gen_state-*.json is a pickle, despite its name)
            json.loads(data)
        else:
            for opcode, _, _ in pickletools.genops(data):
                last = opcode.name
            if last != "STOP":
                return "pickle without STOP"
    except (ValueError, UnicodeDecodeError) as err:
        return f"cut or corrupt at {len(data)} bytes ({type(err).__name__})"
    return None


def state_damage(directory: str) -> Optional[str]:
    """'<file>: <why>' of the first unusable state file, or of a missing experiment state; None if usable."""
    names = state_files(directory)
    if not names:
        return None  # nothing saved yet: a new study, or one killed before Tune's first save
    for name in names:
        why = damage(os.path.join(directory, name))
        if why:
            return f"{name}: {why}"
    if not fnmatch.filter(names, EXPERIMENT_STATE):
        return "no experiment_state-*.json beside tuner.pkl"
    return None


def _stat(directory: str, names: list[str]) -> list[tuple]:
    return [(n, os.stat(os.path.join(directory, n)).st_size, os.stat(os.path.join(directory, n)).st_mtime_ns)
            for n in names]


def backups(directory: str) -> list[str]:
    """Complete backups, newest first."""
    root = os.path.join(directory, BACKUP_DIR)
    try:
        entries = sorted(os.listdir(root), reverse=True)
    except FileNotFoundError:
        return []
    return [os.path.join(root, e) for e in entries if os.path.exists(os.path.join(root, e, COMPLETE))]


def snapshot(directory: str, clock: Callable[[], float] = time.time) -> Optional[str]:
    """Copy the complete, settled state into a new backup; its path, or None when not taken now.
    A failure (a full disk) removes the partial copy and keeps the older backups."""
    names = state_files(directory)
    if not names or state_damage(directory):
        return None
    before = _stat(directory, names)
    if clock() - max(m for _, _, m in before) / 1e9 < SETTLE_S:
        return None
    existing = backups(directory)
    if existing and _read_manifest(existing[0]) == [list(x) for x in before]:
        return None  # unchanged since the last backup
    number = int(os.path.basename(existing[0])) + 1 if existing else 0
    target = os.path.join(directory, BACKUP_DIR, f"{number:08d}")
    try:
        os.makedirs(target)
        for name in names:
            shutil.copy2(os.path.join(directory, name), os.path.join(target, name))
        if _stat(directory, names) != before:  # Tune wrote meanwhile: the copy may mix two saves
            shutil.rmtree(target, ignore_errors=True)
            return None
        atomic_write_bytes(os.path.join(target, COMPLETE), json.dumps(before).encode())
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    for old in backups(directory)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _read_manifest(backup: str) -> list:
    try:
        with open(os.path.join(backup, COMPLETE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def recover(directory: str, log: Callable[[str], None]) -> None:
    """Before a resume: if Tune's state is damaged, set it aside and put the newest good backup
    in its place (one line says so); if no good backup exists, a one-line StudyError."""
    why = state_damage(directory)
    if why is None:
        return
    good = next((b for b in backups(directory) if state_damage(b) is None and state_files(b)), None)
    if good is None:
        raise StudyError(f"Ray Tune's saved state in {directory} is damaged ({why}) and no good copy of it "
                         "exists; the study cannot resume: choose a new --name")
    aside = os.path.join(directory, DAMAGED_DIR, time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(aside, exist_ok=True)
    for name in state_files(directory):
        os.replace(os.path.join(directory, name), os.path.join(aside, name))
    for name in state_files(good):
        with open(os.path.join(good, name), "rb") as f:
            atomic_write_bytes(os.path.join(directory, name), f.read())
    saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(os.path.join(good, COMPLETE))))
    log(f"Ray Tune's saved state was damaged ({why}); resuming from its last good copy of {saved} "
        f"(the damaged files are in {aside})")


class Snapshotter:
    """A driver thread that backs the state up every `interval` seconds while Tune runs."""

    def __init__(self, directory: str, interval: float = 10.0, log: Callable[[str], None] = print):
        self.directory, self.interval, self.log = directory, interval, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tune-state-backup", daemon=True)
        self._warned = False

    def __enter__(self) -> "Snapshotter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                snapshot(self.directory)
            except OSError as err:  # a full disk: the older backup stays; say so once
                if not self._warned:
                    self.log(f"warning: could not back up Ray Tune's state ({err}); the previous copy stays")
                    self._warned = True
