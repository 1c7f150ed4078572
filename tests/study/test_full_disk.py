"""A full disk: our writes land whole or not at all, Tune's cut state falls back to its last good
copy, the driver ends in one line, and a preflight warns when space is short."""
from __future__ import annotations

import errno
import json
import os
import pickle
import sqlite3
import time

import pytest

from study.recovery import driver_log, state_backup
from study.recovery.disk_space import disk_full_reason
from study.config import StudyError
from study.run import main
from study.storage import StudyDir


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    study = StudyDir(str(tmp_path), "s")
    study.write_text("optuna_trials.json", "[1]")
    monkeypatch.setattr(os, "fsync", _enospc)  # the disk fills while the new version is flushed
    with pytest.raises(OSError) as err:
        study.write_text("optuna_trials.json", "[1, 2]")
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path / "s") == ["optuna_trials.json"], "no temp file is left"
    assert (tmp_path / "s" / "optuna_trials.json").read_text() == "[1]"


def test_disk_full_reason_reads_wrapped_errors():
    assert disk_full_reason(OSError(errno.ENOSPC, "No space left on device", "/s/x.json")) == \
        "/s/x.json: No space left on device"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) [SQL: INSERT ...]") from inner
    except RuntimeError as outer:
        assert disk_full_reason(outer) == "database or disk is full"
    assert disk_full_reason(RuntimeError("Saving failed: [Errno 28] No space left on device")) == \
        "No space left on device"
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_reason(KeyError("dataset")) is None


def test_full_disk_during_a_run_is_one_line(capsys, tmp_path, monkeypatch):
    import study.orchestrate

    def full(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as err:
            raise RuntimeError("MlflowException: (sqlite3.OperationalError) database or disk is full") from err

    monkeypatch.setattr(study.orchestrate, "run_study", full)
    try:
        code = main(["--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path), "--name", "s"])
    finally:
        driver_log.restore()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 1 and lines == ["python -m study.run: error: the disk is full (database or disk is full); free "
                                   "space, then re-run the same command to resume from the last saved state "
                                   f"(Ray's and MLflow's messages: {tmp_path}/s/driver.log)"]


def _tune_state(directory, n_trials: int) -> dict[str, bytes]:
    """Files shaped like Tune's state (a JSON experiment state, pickled searcher and tuner)."""
    os.makedirs(directory, exist_ok=True)
    files = {"tuner.pkl": pickle.dumps({"tuner": list(range(50))}),
             "experiment_state-2026-11-29_08-00-00.json":
                 json.dumps({"trial_data": [[f"trial {i}" * 300, {}] for i in range(n_trials)]}).encode(),
             "searcher-state-2026-11-29_08-00-00.pkl": pickle.dumps({"trials": list(range(n_trials))})}
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return files


def _later():
    return time.time() + 60  # the files have settled


def test_cut_state_resumes_from_the_last_good_copy(tmp_path):
    study = str(tmp_path / "s")
    good = _tune_state(study, 3)
    assert state_backup.state_damage(study) is None
    first = state_backup.snapshot(study, clock=_later)
    assert first and state_backup.snapshot(study, clock=_later) is None, "unchanged state: no second copy"
    state = "experiment_state-2026-11-29_08-00-00.json"
    with open(os.path.join(study, state), "r+b") as f:
        f.truncate(8192)  # what a full disk left
    assert state_backup.state_damage(study).startswith(f"{state}: cut or corrupt at 8192 bytes")
    assert state_backup.snapshot(study, clock=_later) is None, "a cut state is never backed up"
    said = []
    state_backup.recover(study, said.append)
    assert len(said) == 1 and said[0].startswith(f"Ray Tune's saved state was damaged ({state}: cut or corrupt")
    for name, data in good.items():
        assert open(os.path.join(study, name), "rb").read() == data
    aside = os.listdir(os.path.join(study, state_backup.DAMAGED_DIR))
    assert len(aside) == 1 and os.path.getsize(os.path.join(study, state_backup.DAMAGED_DIR, aside[0], state)) == 8192
    state_backup.recover(study, said.append)
    assert len(said) == 1, "a good state is left alone"


@pytest.mark.parametrize("cut", ["searcher-state-2026-11-29_08-00-00.pkl", "tuner.pkl"])
def test_cut_pickle_is_detected_without_unpickling(tmp_path, cut):
    study = str(tmp_path / "s")
    _tune_state(study, 2)
    path = os.path.join(study, cut)
    data = open(path, "rb").read()
    for length in (0, 1, len(data) // 2, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:length])
        assert state_backup.state_damage(study), length


def test_damaged_state_without_a_copy_is_one_line(tmp_path):
    study = str(tmp_path / "s")
    _tune_state(study, 1)
    os.remove(os.path.join(study, "experiment_state-2026-11-29_08-00-00.json"))
    with pytest.raises(StudyError, match="no experiment_state-.*json beside tuner.pkl.*choose a new --name"):
        state_backup.recover(study, print)


def test_backup_on_a_full_disk_keeps_the_older_copy(tmp_path, monkeypatch):
    study = str(tmp_path / "s")
    _tune_state(study, 1)
    first = state_backup.snapshot(study, clock=_later)
    _tune_state(study, 2)
    monkeypatch.setattr(state_backup.shutil, "copy2", _enospc)
    with pytest.raises(OSError):
        state_backup.snapshot(study, clock=_later)
    assert state_backup.backups(study) == [first]
    assert os.listdir(os.path.join(study, state_backup.BACKUP_DIR)) == [os.path.basename(first)]
    monkeypatch.undo()
    assert state_backup.snapshot(study, clock=time.time) is None, "files written just now are not settled"
    second = state_backup.snapshot(study, clock=_later)
    assert state_backup.backups(study) == [second, first]


@pytest.mark.slow  # trains and saves a 32-filter trial (~2.7 CPU-s); the estimate's warning runs fast below
def test_checkpoint_size_estimate_matches_a_real_checkpoint(tmp_path):
    """The preflight's bytes per checkpoint against the size of a checkpoint written after an epoch."""
    from study.cli import resolve
    from study.recovery.disk_space import checkpoint_bytes_needed
    from trainables.experiment import Experiment

    cfg = resolve({"space": "noise_sweep", "smoke_test": True, "storage_path": str(tmp_path), "name": "n",
                   "assignments": ["ema_decay=0.999", "nr_filters=32",  # EMA on: all 4 copies per weight
                                   "train_subset=128"]})  # an epoch of one step: Adam's state exists after it
    _, trials, per = checkpoint_bytes_needed(cfg)
    assert trials == cfg.num_samples + 1
    high = cfg.searched["num_mixtures"]["high"] if "num_mixtures" in cfg.searched else cfg.trial["num_mixtures"]
    exp = Experiment(cfg.trial_config({"noise_std": 0.3, "num_mixtures": high, "kind": "smoothed"}), device="cpu",
                     log=lambda m: None)
    exp.run_epoch()
    written = sum(os.path.getsize(p) for p in exp.save(tmp_path / "ckpt").parent.rglob("*") if p.is_file())
    # within 10 %: beside the weights a checkpoint holds ~0.4 KB per tensor entry, the RNG states and the
    # config (measured: +3 % at nr_filters=32, +51 % at the smoke test's 8, where the weights are tiny)
    assert 0.9 * per <= written <= 1.1 * per, (written, per)


def test_preflight_warns_when_space_is_short(tmp_path, monkeypatch):
    from study.recovery import disk_space
    from study.cli import resolve

    cfg = resolve({"space": "noise_sweep", "smoke_test": True, "storage_path": str(tmp_path), "name": "n"})
    said = []
    disk_space.warn_if_short(cfg, said.append)
    assert said == []
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 2**20)
    disk_space.warn_if_short(cfg, said.append)
    assert len(said) == 1 and said[0].startswith(f"warning: 1.0 MB free under {tmp_path}, but the study's")


def test_temp_files_of_a_killed_write_are_swept(tmp_path):
    from trainables.atomic_write import sweep_temp_files

    (tmp_path / ".optuna_trials.json.0123abcd.tmp").write_bytes(b"")  # a SIGKILL between write and rename
    (tmp_path / "optuna_trials.json").write_text("[]")
    (tmp_path / ".validate_storage_marker").write_text("")
    assert sweep_temp_files(str(tmp_path)) == [".optuna_trials.json.0123abcd.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".validate_storage_marker", "optuna_trials.json"]
