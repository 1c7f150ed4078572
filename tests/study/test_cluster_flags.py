"""The cluster path's inputs: object-storage URIs with a query, --optuna-storage, Ray Client addresses,
and MLflow's own per-run lines; bad values are one line, exit 2, nothing written."""
from __future__ import annotations

import os

import pytest

from tests.study.test_bad_inputs import run_main


def test_a_query_string_stays_at_the_end_of_the_study_path():
    from study.storage import StudyDir, join_storage

    uri = "s3://lab/studies?endpoint_override=127.0.0.1:9000&scheme=http"
    assert StudyDir(uri, "s1").path == "s3://lab/studies/s1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join_storage(uri + "", "s1", "study.json").startswith("s3://lab/studies/s1/study.json?")
    assert StudyDir("s3://lab/studies/", "s1").path == "s3://lab/studies/s1"
    assert StudyDir("/data/a?b", "s1").path == "/data/a?b/s1", "a local path's ? is a character of its name"


def test_optuna_storage_is_the_flag_else_a_local_file_else_memory(tmp_path):
    from study.cli import parse, resolve
    from study.orchestrate import optuna_storage

    def cfg(*extra):
        return resolve(parse(["--space", "noise_sweep", "--smoke-test", *extra]))

    local = cfg("--storage-path", str(tmp_path))
    assert optuna_storage(local) == f"sqlite:///{tmp_path}/{local.name}/optuna.db"
    remote = cfg("--storage-path", "s3://lab/studies", "--mlflow-uri", "http://127.0.0.1:1")
    assert optuna_storage(remote) is None
    url = "postgresql://optuna@127.0.0.1:5432/optuna"
    assert optuna_storage(cfg("--storage-path", "s3://lab/s", "--mlflow-uri", "http://h:1", "--optuna-storage", url)) == url
    assert optuna_storage(cfg("--storage-path", str(tmp_path), "--optuna-storage", url)) == url


@pytest.mark.parametrize("value, words", [
    ("not-a-url", ["--optuna-storage 'not-a-url' is not an RDB URL"]),
    ("postgresql://me:s3cret@127.0.0.1:1/optuna", ["Optuna storage postgresql://me:***@127.0.0.1:1/optuna is unreachable"]),
])
def test_a_bad_optuna_storage_is_one_line_and_nothing_written(capsys, tmp_path, value, words):
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path / "s"),
                           "--optuna-storage", value)
    assert code == 2 and len(lines) == 1, lines
    assert all(w in lines[0] for w in words) and "s3cret" not in lines[0], lines
    assert not (tmp_path / "s").exists()


def test_ray_client_addresses_are_refused_before_anything_runs(capsys, tmp_path):
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path / "s"),
                           "--address", "ray://10.0.0.1:10001")
    assert code == 2 and len(lines) == 1 and "Ray Client (ray://) is not supported" in lines[0], lines
    assert not (tmp_path / "s").exists()


def test_the_ui_hint_never_prints_a_password(tmp_path):
    from study.cli import parse, resolve
    from study.summary import ui_hint

    cfg = resolve(parse(["--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path)]))
    hint = ui_hint(cfg, "1", "postgresql://me:s3cret@db:5432/optuna")
    assert "postgresql://me:***@db:5432/optuna" in hint and "s3cret" not in hint


def test_mlflow_prints_no_view_run_lines_of_its_own(tmp_path, monkeypatch):
    from study.cli import parse, resolve
    from study.storage import StudyDir
    from study.tracking import MlflowTracker

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    cfg = resolve(parse(["--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path)]))
    MlflowTracker(cfg, StudyDir(cfg.storage_path, cfg.name)).client
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
