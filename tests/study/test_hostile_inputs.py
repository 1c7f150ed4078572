"""Values that used to pass (nan, inf, text for a number), a garbage study.json, a study directory
others can write to, and the summary of a study interrupted before its trials had configs:
each bad input is one line on stderr, exit 2, and nothing written."""
from __future__ import annotations

import json
import os

import pytest

from study.run import main
from tests.study.test_bad_inputs import run_main, saved_study, snapshot  # noqa: F401 (fixture)

FLOAT_FLAGS = ("--noise-std", "--cpus-per-trial", "--gpus-per-trial")


@pytest.mark.parametrize("flag", FLOAT_FLAGS)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "NaN", "abc"])
def test_float_flags_refuse_non_finite(capsys, tmp_path, flag, value):
    space = "mixture_sweep" if flag == "--noise-std" else "noise_sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["--space", space, "--smoke-test", "--storage-path", str(tmp_path / "s"), f"{flag}={value}"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert f"argument {flag}:" in lines[0] and repr(value) in lines[0], lines
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("assignment, message", [
    ("nr_filters=abc", "nr_filters must be an integer, got 'abc'"),
    ("lr=abc", "lr must be a finite number, got 'abc'"),
    ("lr=NaN", "lr must be a finite number, got nan"),          # JSON's NaN
    ("lr=nan", "lr must be a finite number, got 'nan'"),        # a string float() would accept
    ("lr=Infinity", "lr must be a finite number, got inf"),
    ("lr=-inf", "lr must be a finite number, got '-inf'"),
    ("nr_filters=inf", "nr_filters must be an integer, got 'inf'"),
    ("grad_clip=1e999", "grad_clip must be a finite number, got inf"),
])
def test_set_names_the_key_and_refuses_non_finite(capsys, tmp_path, assignment, message):
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path / "s"),
                           "--set", assignment)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '{"config": {}, "flags": {}}', '{"flags": 3}',
                                     "\udcff"])
def test_garbage_study_file_is_one_line(capsys, saved_study, content):  # noqa: F811
    storage, study_dir = saved_study
    (study_dir / "study.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    before = snapshot(study_dir)
    for extra in ([], ["--dry-run"]):
        code, lines = run_main(capsys, "--resume", "--name", "saved", "--storage-path", str(storage), *extra)
        assert code == 2 and len(lines) == 1, lines
        assert f"{study_dir}/study.json is not a readable study file (" in lines[0], lines
    assert snapshot(study_dir) == before


@pytest.mark.parametrize("where", ["dir", "file", "nested"])
def test_resume_refused_when_others_can_write(capsys, saved_study, where):  # noqa: F811
    storage, study_dir = saved_study
    (study_dir / "trial_x").mkdir(mode=0o755)
    (study_dir / "trial_x" / "params.pkl").write_bytes(b"")
    target = {"dir": study_dir, "file": study_dir / "results.csv", "nested": study_dir / "trial_x" / "params.pkl"}[where]
    os.chmod(target, os.stat(target).st_mode | 0o020)  # group-writable
    before = snapshot(study_dir)
    code, lines = run_main(capsys, "--resume", "--name", "saved", "--storage-path", str(storage))
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("python -m study.run: error: refusing to resume: ")
    assert f"{target} is writable by group or others (mode " in lines[0] and "run code as you" in lines[0]
    assert snapshot(study_dir) == before
    os.chmod(target, os.stat(target).st_mode & ~0o022)
    code, lines = run_main(capsys, "--resume", "--name", "saved", "--storage-path", str(storage), "--dry-run")
    assert code == 0, lines


def test_summary_of_trials_without_config():
    """Ctrl-C before the searcher configured a trial: Tune returns it PENDING with an empty config."""
    from study.cli import resolve
    from study.summary import format_table, table_rows

    cfg = resolve({"space": "noise_sweep", "smoke_test": True, "storage_path": "/tmp/x", "name": "n"})
    started = {"kind": "smoothed", "noise_std": 0.3, "num_mixtures": 3, "max_epochs": 2}
    records = [{"trial_id": "a", "config": {}, "metrics": {}, "error": None},
               {"trial_id": "b", "config": started, "metrics": {"epoch": 1.0}, "error": None}]
    rows = table_rows(cfg, records, states={"b": "interrupted"})
    assert [(r["trial_id"], r["run"], r["state"]) for r in rows] == [
        ("a", "(not started)", "pending"), ("b", "smoothed s=0.30 K=3", "interrupted")]
    assert "(not started) | pending" in format_table(cfg, rows)
    assert json.dumps(rows)  # results.csv and the summary run take plain data


def test_planted_state_without_study_file_is_refused(capsys, tmp_path):
    """A directory someone else could write, holding a tuner.pkl but no study.json: Tune would still
    unpickle it, so a 'new' study there is refused too."""
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    (study_dir / "tuner.pkl").write_bytes(b"planted")
    os.chmod(study_dir, 0o777)
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path),
                           "--name", "s")
    assert code == 2 and len(lines) == 1 and f"{study_dir} is writable by group or others (mode 777)" in lines[0]
    assert os.listdir(study_dir) == ["tuner.pkl"]
