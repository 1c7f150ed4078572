"""The driver's terminal holds the product's own lines; the libraries' logs go to a file it names.

Ray Tune logs a failed trial with its traceback, MLflow logs a database error with SQLAlchemy's
chain of three, Ray warns at startup, MLflow announces its table migrations: on a full disk that
was four tracebacks before the driver's one line. Each library installs its own handler that
writes to stderr ("ray" on `import ray`, "mlflow", "alembic", "sqlalchemy.engine" and "huey" on
`import mlflow`, "optuna" on `import optuna`), so after those imports this module replaces the handlers
of those loggers with one handler writing to the study's `driver.log` (a local log under the cache
directory when the study lives in an object store), and also adds it to the root logger so that
records of loggers with no handler (which Python would print to stderr) land there too. The
driver's fault lines name the file (`study/run.py`).

The handler never raises and never prints Python's "--- Logging error ---" traceback: a log the full
disk refuses moves, with a note, to the local cache directory (`cache_log_path`, where the log of an
object-store study lives anyway), and `current()` names where the records are; where that fails too
they are dropped.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable, Optional

from study.config import StudyConfig
from study.storage import StudyDir, is_uri
from trainables.cache_files import resolve_cache_dir

LOG_FILE = "driver.log"
LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "sqlalchemy.engine", "huey", "optuna")  # and RAY_LOGGERS
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _DriverLogHandler(logging.FileHandler):
    """Appends to the driver log, opened at the first record. A failed write (the full disk the log is
    on) moves the log to `fallback` on another disk, with a note; where that fails too, records are
    dropped."""

    def __init__(self, path: str, fallback: Callable[[], str]):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.fallback, self.dropped = fallback, 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except Exception:  # FileHandler opens the file outside its own try (delay=True): a missing directory
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.fallback is None:
            self.dropped += 1
            return
        failed, where = self.baseFilename, self.fallback
        self.fallback = None  # one move at most; a failure there drops
        try:
            where = where()
        except OSError:
            self.dropped += 1
            return
        if where == failed:
            self.dropped += 1
            return
        self.close()
        self.baseFilename = where  # FileHandler reopens it at the next record (delay=True)
        self.emit(logging.makeLogRecord({"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                                         "msg": f"{failed} could not be written; the driver log continues here"}))
        self.emit(record)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the flush of what the full disk refused; the file is closed all the same
            pass


_routed: dict = {"handler": None, "removed": []}  # what restore() undoes


def log_path(cfg: StudyConfig) -> str:
    """<study dir>/driver.log for a local study; for an object store the local `cache_log_path`."""
    if not is_uri(cfg.storage_path):
        return os.path.join(StudyDir(cfg.storage_path, cfg.name).path, LOG_FILE)
    return cache_log_path(cfg)


def cache_log_path(cfg: StudyConfig) -> str:
    """A local file named by the study and its storage (two studies of one name in two places keep two
    logs) under the cache directory (trainables/cache_files.py, created): where the log of an object-store
    study lives, and where a local study's moves when its disk is full."""
    tag = hashlib.sha256(StudyDir(cfg.storage_path, cfg.name).path.encode()).hexdigest()[:8]
    directory = resolve_cache_dir() / "driver-logs"
    directory.mkdir(exist_ok=True)
    return str(directory / f"{cfg.name}-{tag}.log")


def route_library_logs(cfg: StudyConfig) -> str:
    """Send Ray's, MLflow's, SQLAlchemy's, Alembic's and Optuna's logs (and any unhandled logger's)
    to the study's driver log instead of the terminal; returns the log's path. Calling it again
    moves the routing to the new path."""
    import mlflow  # noqa: F401  its import installs the stderr handlers replaced below
    import optuna  # noqa: F401  so does Optuna's

    from trainables.tune.logs import RAY_LOGGERS  # after Ray's import, which installs its stderr handler

    restore()
    path = log_path(cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = _DriverLogHandler(path, fallback=lambda: cache_log_path(cfg))
    handler.setFormatter(logging.Formatter(FORMAT))
    removed = []
    for name in RAY_LOGGERS + LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if not isinstance(old, logging.FileHandler):  # a stream to the terminal; a library's own file stays
                logger.removeHandler(old)
                removed.append((logger, old, logger.propagate))
        if not logger.handlers and name.count(".") and logger.propagate:
            continue  # a child with no handler reaches its parent's (now ours)
        logger.addHandler(handler)
        removed.append((logger, None, logger.propagate))
        logger.propagate = False
    logging.getLogger().addHandler(handler)
    _routed.update(handler=handler, removed=removed)
    return path


def current() -> Optional[str]:
    """The driver log in use, None before route_library_logs."""
    handler = _routed["handler"]
    return handler.baseFilename if handler is not None else None


def restore() -> None:
    """Undo route_library_logs (tests calling the CLI in-process; the CLI itself keeps the routing to its exit)."""
    handler = _routed["handler"]
    if handler is None:
        return
    for logger, old, propagate in reversed(_routed["removed"]):
        logger.propagate = propagate
        if old is None:
            logger.removeHandler(handler)
        else:
            logger.addHandler(old)
    logging.getLogger().removeHandler(handler)
    handler.close()
    _routed.update(handler=None, removed=[])
