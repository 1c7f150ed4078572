"""Ray's, MLflow's and the other libraries' log records go to the study's driver.log, not the terminal."""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import subprocess
import sys

import pytest

from study.recovery import driver_log
from study.cli import resolve
from tests.study.helpers import REPO

LOGGERS = ["ray.tune.execution.tune_controller", "mlflow.store.db.utils", "sqlalchemy.engine.Engine", "alembic",
           "optuna.storages", "some.library.without.a.handler"]


@pytest.fixture
def cfg(tmp_path):
    return resolve({"space": "noise_sweep", "smoke_test": True, "storage_path": str(tmp_path), "name": "s"})


@pytest.fixture(autouse=True)
def _restored():
    yield
    driver_log.restore()


def _stderr_handlers(name: str) -> list:
    """The logger's handlers that print on the terminal. (Their output is not what the test reads: a
    handler made at `import ray` keeps the sys.stderr of that moment, under pytest an earlier test's capture.)"""
    return [h for h in logging.getLogger(name).handlers
            if type(h) is logging.StreamHandler or (isinstance(h, logging.StreamHandler)
                                                    and not isinstance(h, logging.FileHandler))]


def _log_a_failure(name: str) -> None:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        logging.getLogger(name).error("Trial task failed for trial %s", name, exc_info=True)


def test_library_tracebacks_land_in_the_log_not_on_the_terminal(cfg, tmp_path, capfd):
    import mlflow  # noqa: F401  (the handlers it installs)
    import ray  # noqa: F401

    assert _stderr_handlers("ray"), "without the routing Ray prints on stderr (its own StreamHandler)"
    path = driver_log.route_library_logs(cfg)
    assert path == str(tmp_path / "s" / "driver.log") == driver_log.current()
    for name in LOGGERS:
        _log_a_failure(name)
    logging.getLogger("ray").info("Token authentication is enabled")  # Ray's INFO/WARNING at startup
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    text = open(path).read()
    assert text.count("Traceback") == len(LOGGERS)
    assert all(f"Trial task failed for trial {name}" in text for name in LOGGERS)


FULL = "/dev/full"  # Linux: every write fails with ENOSPC


@pytest.mark.skipif(not os.path.exists(FULL), reason="needs Linux's /dev/full")
def test_a_log_on_a_full_disk_moves_to_the_cache_and_says_so(cfg, tmp_path, capfd, monkeypatch):
    plain = logging.FileHandler(FULL)
    logging.getLogger("plain").addHandler(plain)
    try:
        logging.getLogger("plain").error("x")
    finally:
        logging.getLogger("plain").removeHandler(plain)
        with pytest.raises(OSError):
            plain.close()  # a plain handler's close flushes the buffered record: ENOSPC again
    assert "--- Logging error ---" in capfd.readouterr().err, "a plain FileHandler prints the failed write"

    monkeypatch.setenv("SMOOTHING_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(driver_log, "log_path", lambda cfg: FULL)
    driver_log.route_library_logs(cfg)
    _log_a_failure("ray.tune")
    _log_a_failure("mlflow.store.db.utils")
    assert capfd.readouterr().err == ""
    moved = driver_log.current()
    assert moved == driver_log.cache_log_path(cfg) and moved.startswith(str(tmp_path / "cache" / "driver-logs"))
    lines = open(moved).read().splitlines()
    assert lines[0].endswith(f"{FULL} could not be written; the driver log continues here")
    assert sum("Trial task failed" in line for line in lines) == 2 and driver_log._routed["handler"].dropped == 0


@pytest.mark.skipif(not os.path.exists(FULL), reason="needs Linux's /dev/full")
def test_where_no_log_can_be_written_records_are_dropped_silently(cfg, capfd, monkeypatch):
    monkeypatch.setattr(driver_log, "log_path", lambda cfg: FULL)
    monkeypatch.setattr(driver_log, "cache_log_path", lambda cfg: FULL)
    driver_log.route_library_logs(cfg)
    _log_a_failure("ray.tune")
    _log_a_failure("ray.tune")
    assert capfd.readouterr().err == ""
    assert driver_log._routed["handler"].dropped == 2
    driver_log.restore()  # closes the log without raising


def test_restore_gives_the_terminal_back_and_routing_twice_moves_it(cfg, tmp_path, capfd):
    import ray  # noqa: F401

    first = driver_log.route_library_logs(cfg)
    second = driver_log.route_library_logs(dataclasses.replace(cfg, name="t"))
    _log_a_failure("ray.tune")
    assert capfd.readouterr().err == ""
    assert not os.path.exists(first) and "Traceback" in open(second).read()
    assert sum(isinstance(h, logging.FileHandler) for h in logging.getLogger("ray").handlers) == 1
    driver_log.restore()
    assert driver_log.current() is None
    assert _stderr_handlers("ray"), "Ray's own stderr handler is back"
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("ray").handlers)


def test_an_object_store_study_logs_to_a_local_file(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHING_STUDY_CACHE", str(tmp_path / "cache"))
    one = driver_log.log_path(dataclasses.replace(cfg, storage_path="s3://bucket/a"))
    other = driver_log.log_path(dataclasses.replace(cfg, storage_path="s3://bucket/b"))
    assert one.startswith(str(tmp_path / "cache" / "driver-logs" / "s-")) and one != other


def test_routing_holds_in_a_fresh_driver_process(tmp_path):
    """In a process that has not imported Ray yet (the CLI's), Ray's import must not bring its stderr
    handler back after the routing."""
    script = (f"from study.cli import resolve\nfrom study.recovery import driver_log\n"
              f"cfg = resolve({{'space': 'noise_sweep', 'smoke_test': True, 'storage_path': {str(tmp_path)!r}, "
              f"'name': 's'}})\nprint(driver_log.route_library_logs(cfg))\nimport ray, mlflow, optuna\n"
              f"import logging\nfor name in {LOGGERS!r}:\n    logging.getLogger(name).error('failed in %s', name)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    assert done.stdout.strip() == str(tmp_path / "s" / "driver.log")
    assert open(tmp_path / "s" / "driver.log").read().count("failed in ") == len(LOGGERS)


def test_a_log_whose_directory_is_gone_moves_to_the_cache(cfg, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SMOOTHING_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(driver_log, "log_path", lambda cfg: str(tmp_path / "removed" / "driver.log"))
    driver_log.route_library_logs(cfg)
    os.rmdir(tmp_path / "removed")  # FileHandler opens the file at the first record, outside its error handling
    _log_a_failure("ray.tune")
    assert capfd.readouterr().err == "" and driver_log.current() == driver_log.cache_log_path(cfg)
    assert "Trial task failed" in open(driver_log.current()).read()
