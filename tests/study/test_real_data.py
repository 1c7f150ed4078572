"""A study on real 28x28 data end to end (issue 9): MNIST from ../shared/data/mnist (its 10k test
split re-split into 5,000 train / 5,000 test images), or where that is absent Debian's
Fashion-MNIST; a 256-image training subset, the smoke-test network, one epoch, one searched
trial beside the baseline."""
from __future__ import annotations

import math

import pytest

from tests.study.helpers import run_cli, study_cmd, study_runs

pytestmark = pytest.mark.slow

NAME = "real-28x28"
TRAIN_SUBSET = 256


@pytest.mark.timeout(900)
def test_study_on_real_28x28_data_with_a_training_subset(real_28x28, real_data_cache_dir, tmp_path, monkeypatch):
    from trainables.cache_files import CACHE_ENV_VAR

    dataset, data_dir = real_28x28
    extractor = f"{dataset}_cnn"
    monkeypatch.setenv(CACHE_ENV_VAR, str(real_data_cache_dir))  # the floor test's classifier, where it ran first
    cmd = study_cmd(tmp_path, NAME, "--space", "noise_sweep", "--smoke-test", "--dataset", dataset,
                    "--data-dir", data_dir, "--num-samples", "1", "--max-epochs", "1",
                    "--set", f"train_subset={TRAIN_SUBSET}")
    result = run_cli(cmd, timeout=840)
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"best (fd_{extractor} min):" in result.stdout
    client, _, trials, summaries = study_runs(tmp_path / NAME, NAME)
    assert sorted(r.data.tags["kind"] for r in trials) == ["baseline", "smoothed"] and len(summaries) == 1
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        assert params["dataset"] == dataset and params["train_subset"] == str(TRAIN_SUBSET)
        assert params["max_eval_images"] == "64" and params["extractor"] == extractor
        assert run.data.tags["state"] == "completed"
        assert math.isfinite(metrics[f"fd_{extractor}"]) and metrics[f"fd_{extractor}"] > 0
        # 8-bit images: an untrained model's 8 bits/dim at most, any fit well under it
        assert 0 < metrics["bpd_bound"] < 8
