"""Extending a study by a larger --num-samples: what is allowed, what stays refused, what is recorded."""
from __future__ import annotations

import json

import pytest

from study.cli import parse
from study.config import StudyError
from study.orchestrate import prepare
from study.run import main
from study.storage import StudyDir
from tests.study.test_bad_inputs import snapshot


def saved(tmp_path, *argv, name="grow"):
    """A study directory as a first run writes it (study.json from the same resolution)."""
    flags = parse(["--storage-path", str(tmp_path), "--name", name, *argv])
    cfg, _, stored_flags = prepare(flags)
    (tmp_path / name).mkdir()
    (tmp_path / name / "study.json").write_text(json.dumps({"config": json.loads(cfg.to_json()), "flags": stored_flags}))
    return cfg


def resume(tmp_path, *argv, name="grow"):
    return prepare(parse(["--storage-path", str(tmp_path), "--resume", "--name", name, *argv]))


def test_a_larger_num_samples_extends_the_study(tmp_path):
    stored = saved(tmp_path, "--space", "noise_sweep", "--smoke-test")
    cfg, resuming, flags = resume(tmp_path, "--num-samples", "5")
    assert resuming and stored.num_samples == 2 and cfg.num_samples == 5
    # "auto" would pick ASHA for 5 searched trials; the running study keeps its FIFO
    assert stored.scheduler == "fifo" and cfg.scheduler == "fifo"
    assert cfg == stored.__class__(**{**stored.__dict__, "num_samples": 5})


def test_other_changes_stay_refused_with_the_difference_named(tmp_path):
    saved(tmp_path, "--space", "noise_sweep", "--smoke-test")
    with pytest.raises(StudyError, match=r"max_epochs=2 \(asked 3\)"):
        resume(tmp_path, "--num-samples", "5", "--max-epochs", "3")
    with pytest.raises(StudyError, match=r"scheduler='fifo' \(asked 'asha'\)"):
        resume(tmp_path, "--num-samples", "5", "--scheduler", "asha")
    with pytest.raises(StudyError, match=r"num_samples=2 \(asked 1\); a study can be extended .* never shrunk"):
        resume(tmp_path, "--num-samples", "1")


def test_a_space_without_search_is_not_extended(tmp_path):
    saved(tmp_path, "--space", "paper", "--smoke-test")
    with pytest.raises(StudyError, match="searches nothing"):
        resume(tmp_path, "--num-samples", "3")


def test_the_original_command_resumes_the_extended_study(tmp_path):
    from study.extend import record_extension

    stored = saved(tmp_path, "--space", "noise_sweep", "--smoke-test")
    cfg, _, flags = resume(tmp_path, "--num-samples", "4")
    study_dir = StudyDir(str(tmp_path), "grow")
    assert record_extension(study_dir, cfg, flags) == 2
    assert record_extension(study_dir, cfg, flags) is None, "nothing to record twice"
    doc = json.loads((tmp_path / "grow" / "study.json").read_text())
    assert doc["config"] == {**json.loads(stored.to_json()), "num_samples": 4}
    assert [(e["from"], e["to"]) for e in doc["extensions"]] == [(2, 4)]
    again, resuming, _ = resume(tmp_path)  # no --num-samples: the study as extended
    assert resuming and again.num_samples == 4


def test_dry_run_of_an_extension_writes_nothing(capsys, tmp_path):
    saved(tmp_path, "--space", "noise_sweep", "--smoke-test")
    before = snapshot(tmp_path / "grow")
    assert main(["--storage-path", str(tmp_path), "--resume", "--name", "grow", "--num-samples", "6", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1])["num_samples"] == 6
    assert snapshot(tmp_path / "grow") == before
