"""The one atomic writer (trainables/atomic_write.py): content, durability, and nothing left behind."""
from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from trainables import atomic_write as aw
from trainables.checkpoint import FILE_NAME, load_checkpoint, save_checkpoint


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_bytes_text_and_callback_land_whole(tmp_path):
    target = tmp_path / "new" / "dir" / "f.bin"
    assert aw.atomic_write_bytes(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    aw.atomic_write_text(str(target), "grüße")
    assert target.read_text(encoding="utf-8") == "grüße"
    tensor = torch.arange(5.0)
    aw.atomic_write(target, lambda f: torch.save({"t": tensor}, f))
    assert torch.equal(torch.load(target, weights_only=True)["t"], tensor)
    assert sorted(os.listdir(target.parent)) == ["f.bin"]


def _half_then_full(f):
    f.write(b"half of the new")
    _enospc()


def _half_then_ctrl_c(f):
    f.write(b"half of the new")
    raise KeyboardInterrupt


@pytest.mark.parametrize("fault", ["callback ENOSPC", "callback Ctrl-C", "fsync ENOSPC", "replace fails"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, fault):
    target = tmp_path / "state.json"
    target.write_text("old")
    write = {"callback ENOSPC": _half_then_full, "callback Ctrl-C": _half_then_ctrl_c}.get(fault, lambda f: f.write(b"new"))
    if fault == "fsync ENOSPC":
        monkeypatch.setattr(os, "fsync", _enospc)
    if fault == "replace fails":
        monkeypatch.setattr(os, "replace", lambda *a: _enospc())
    with pytest.raises(KeyboardInterrupt if "Ctrl-C" in fault else OSError) as err:
        aw.atomic_write(target, write)
    if "ENOSPC" in fault or fault == "replace fails":
        assert err.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"], "no temporary file is left"


def test_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    aw.atomic_write_bytes(tmp_path / "a", b"x")
    assert events == ["fsync file", "replace", "fsync dir"]
    events.clear()
    aw.atomic_write_from(tmp_path / "b", lambda tmp: tmp.write_bytes(b"y"))
    assert events == ["fsync file", "replace", "fsync dir"]
    assert (tmp_path / "b").read_bytes() == b"y"


def test_permissions_are_those_of_a_plain_open(tmp_path):
    old_umask = os.umask(0o022)
    try:
        aw.atomic_write_bytes(tmp_path / "new", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o644
        os.umask(0o077)
        aw.atomic_write_bytes(tmp_path / "private", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o600
        os.umask(0o022)
        (tmp_path / "kept").write_bytes(b"old")
        os.chmod(tmp_path / "kept", 0o600)
        aw.atomic_write_bytes(tmp_path / "kept", b"new")  # an overwrite keeps the file's mode
        assert stat.S_IMODE(os.stat(tmp_path / "kept").st_mode) == 0o600
    finally:
        os.umask(old_umask)


def test_a_tool_writing_by_name_that_fails_leaves_nothing(tmp_path):
    def produce(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("the compiler failed")

    with pytest.raises(RuntimeError, match="compiler failed"):
        aw.atomic_write_from(tmp_path / "lib.so", produce)
    assert os.listdir(tmp_path) == []


def test_temp_names_are_recognized_and_swept_alone(tmp_path):
    made = aw.temp_name("optuna_trials.json")
    assert aw.is_temp_name(made) and made.startswith(".optuna_trials.json.")
    others = [".hidden", "x.tmp", ".x.tmp", ".x.notahexname.tmp", ".validate_storage_marker", "optuna_trials.json"]
    assert not any(aw.is_temp_name(name) for name in others)
    for name in [made, *others]:
        (tmp_path / name).write_bytes(b"")
    assert aw.sweep_temp_files(tmp_path) == [made]
    assert sorted(os.listdir(tmp_path)) == sorted(others)
    assert aw.sweep_temp_files(tmp_path / "absent") == []


def test_a_checkpoint_cut_by_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    config = {"kind": "baseline"}
    save_checkpoint(tmp_path, config=config, epoch=1, units={}, rng={})
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, config=config, epoch=2, units={}, rng={})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [FILE_NAME]
    assert load_checkpoint(tmp_path, config=config)["epoch"] == 1
