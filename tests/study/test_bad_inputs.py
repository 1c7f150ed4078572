"""Each bad input: one clear line on stderr, a non-zero exit, and nothing already saved touched."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from study.run import main
from tests.study.helpers import free_port, run_cli, study_cmd


def run_main(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    return code, lines


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def saved_study(tmp_path):
    """A study directory as a first run leaves it (study.json written by the same resolution)."""
    from study.cli import parse
    from study.orchestrate import prepare

    flags = parse(["--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path), "--name", "saved"])
    cfg, _, stored_flags = prepare(flags)
    study_dir = tmp_path / "saved"
    study_dir.mkdir()
    doc = {"config": json.loads(cfg.to_json()), "flags": stored_flags}
    (study_dir / "study.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    (study_dir / "results.csv").write_text("trial_id,state\nabc,completed\n")
    return tmp_path, study_dir


@pytest.mark.parametrize("argv, message", [
    (["--space", "nope"], "unknown space 'nope'; valid spaces: noise_sweep, mixture_sweep, joint, paper"),
    (["--space", "noise_sweep", "--dataset", "svhn"], "unknown dataset 'svhn'; valid datasets: digits, mnist"),
    (["--space", "mixture_sweep", "--noise-std", "-0.5"], "noise_std must be >= 0, got -0.5"),
    (["--space", "noise_sweep", "--num-mixtures", "0"], "num_mixtures must be >= 1, got 0"),
    (["--space", "noise_sweep", "--set", "diagnostics=on"], "diagnostics=on needs kind=smoothed"),  # its baseline
    (["--resume", "--name", "never-ran"], "--resume: no study 'never-ran'"),
])
def test_bad_input_one_line(capsys, tmp_path, argv, message):
    code, lines = run_main(capsys, "--storage-path", str(tmp_path / "studies"), *argv)
    assert code != 0 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "studies").exists(), "a refused study writes nothing"


def test_unwritable_storage_path(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made under a file, not even by root
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(blocker / "s"))
    assert code != 0 and len(lines) == 1 and "is not writable" in lines[0], lines


def test_unreachable_mlflow_uri(capsys, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--storage-path", str(tmp_path),
                           "--mlflow-uri", uri)
    assert code != 0 and len(lines) == 1 and f"MLflow server {uri} is unreachable" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_file_store_is_refused(capsys, tmp_path):
    code, lines = run_main(capsys, "--space", "noise_sweep", "--storage-path", str(tmp_path),
                           "--mlflow-uri", str(tmp_path / "mlruns"))
    assert code != 0 and len(lines) == 1 and "file stores" in lines[0], lines


def test_changed_settings_on_an_existing_study_touch_nothing(capsys, saved_study):
    storage, study_dir = saved_study
    before = snapshot(study_dir)
    for argv in (["--num-samples", "1"], ["--mlflow-uri", "http://127.0.0.1:1"], ["--max-epochs", "9"]):
        code, lines = run_main(capsys, "--resume", "--name", "saved", "--storage-path", str(storage), *argv)
        assert code != 0 and len(lines) == 1 and "exists with other settings" in lines[0], lines
    assert snapshot(study_dir) == before


def test_dry_run_of_an_existing_study_says_it_resumes(capsys, saved_study):
    storage, study_dir = saved_study
    before = snapshot(study_dir)
    assert main(["--resume", "--name", "saved", "--storage-path", str(storage), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1])["name"] == "saved" and "resumes the existing study" in out
    assert snapshot(study_dir) == before


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_request_without_gpus_fails_fast(tmp_path):
    result = run_cli(study_cmd(tmp_path, "gpu", "--space", "noise_sweep", "--smoke-test", "--gpus-per-trial", "1"),
                     timeout=240)
    errors = [ln for ln in result.stdout.splitlines() if "error:" in ln]
    assert result.returncode == 2 and len(errors) == 1, result.stdout[-3000:]
    assert "--gpus-per-trial 1 but the Ray cluster has 0 GPUs" in errors[0]
    assert not (tmp_path / "gpu").exists()


def test_damaged_data_file_ends_in_one_line_before_anything_is_written(capsys, tmp_path):
    from tests.idx_files import write_split
    import numpy as np

    data = tmp_path / "data"
    for prefix in ("train", "t10k"):
        write_split(data, prefix, np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    broken = data / "train-images-idx3-ubyte.gz"
    broken.write_bytes(b"\x00")  # a 1-byte download
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--dataset", "mnist",
                           "--data-dir", str(data), "--storage-path", str(tmp_path / "studies"))
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("python -m study.run: error: ") and str(broken) in lines[0]
    assert "named .gz but is not gzip-compressed" in lines[0]
    assert not (tmp_path / "studies" / "noise_sweep-mnist-smoke").exists()


def test_failed_download_hint_survives_into_the_study_error(capsys, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a, got:\nno network")

    monkeypatch.setattr(tvd, "MNIST", offline)
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--dataset", "mnist",
                           "--data-dir", str(tmp_path / "empty"), "--storage-path", str(tmp_path / "studies"))
    assert code == 2 and len(lines) == 1, lines
    for part in ("Put these files in place", "train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]",
                 "no network"):
        assert part in lines[0], lines[0]


def test_folder_study_without_inception_weights_fails_in_one_line(capsys, tmp_path, monkeypatch):
    from PIL import Image

    from trainables.quality import extractors as fx

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 12), (40 * i, 0, 0)).save(images / f"{i}.png")
    monkeypatch.delenv(fx.INCEPTION_WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, destination):
        raise OSError("Name or service not known")

    monkeypatch.setattr(fx, "_download", offline)
    code, lines = run_main(capsys, "--space", "noise_sweep", "--smoke-test", "--dataset", "folder",
                           "--data-dir", str(images), "--storage-path", str(tmp_path / "studies"))
    assert code == 2 and len(lines) == 1, lines
    assert fx.INCEPTION_WEIGHTS_FILE in lines[0] and fx.INCEPTION_WEIGHTS_FLAG in lines[0]
    assert not (tmp_path / "studies" / "noise_sweep-folder-smoke").exists()
