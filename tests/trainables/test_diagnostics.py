"""Diagnostics of a smoothed trial (trainables/quality/diagnostics.py) on tiny untrained models and digits.

Each distance is checked against evaluate_samples on images made here independently (the
noise by its own formula, the one-step and two-step outputs by direct calls), the noisy
reference statistics against mean and covariance of features of independently noised images.
"""
import math

import numpy as np
import pytest
import torch

from search_spaces.metric_names import diagnostic_names
from trainables.cache_files import CACHE_ENV_VAR
from trainables.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from trainables.data import load_dataset, subset_indices
from trainables.pixelcnnpp import PixelCNNpp
from trainables.quality import extractors as fx
from trainables.quality.diagnostics import diagnostics_enabled, real_noisy_test_images, smoothed_diagnostics
from trainables.quality.evaluate import evaluate_samples
from trainables.quality.reference_stats import NOISE_SEED, reference_statistics, reference_stats_path
from trainables.quality.trial_evaluation import SampleEvaluator
from trainables.sampling.fast import fast_sample
from trainables.sampling.naive import gradient_denoise

N = 80  # > 64, the digits classifier's feature dimension: a non-singular covariance, no FewSamplesWarning
SIGMA = 0.4
QUIET = lambda message: None  # noqa: E731


@pytest.fixture(scope="module", autouse=True)
def single_threaded_blas():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def cache_dir(digits_cache_dir):
    return digits_cache_dir  # the session's digits classifier (tests/conftest.py), trained once


@pytest.fixture(scope="module")
def extractor(cache_dir):
    return fx.build_extractor("digits_cnn", "digits", cache_dir=cache_dir, log=QUIET)  # trains it once (seconds)


def _cfg(noise_std=SIGMA, seed=0, kind="smoothed", diagnostics="auto", gradient_mode="full") -> TrialConfig:
    return TrialConfig(model=ModelConfig(nr_filters=8, nr_resnet=1, num_mixtures=2),
                       data=DataConfig(noise_std=noise_std), train=TrainConfig(kind=kind, seed=seed),
                       eval=EvalConfig(num_eval_samples=N, diagnostics=diagnostics, gradient_mode=gradient_mode))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return PixelCNNpp(1, 8, 1, 2), PixelCNNpp(1, 8, 1, 2, conditional=True)  # smoothed p(x~), denoiser


def _independent_real_noisy(noise_std: float, n: int = N) -> torch.Tensor:
    """x + sigma * eps with eps of image i from numpy's stream (NOISE_SEED, i), written out here."""
    images = load_dataset("digits", "test")
    chosen = subset_indices(len(images), n)
    eps = np.stack([np.random.default_rng([NOISE_SEED, int(i)]).standard_normal((1, 8, 8), dtype=np.float32)
                    for i in chosen])
    return images[torch.from_numpy(chosen)] + noise_std * torch.from_numpy(eps)


def _score(images, cache_dir, **kwargs) -> float:
    return evaluate_samples(images, "digits", cache_dir=cache_dir, log=QUIET, **kwargs)["fd_digits_cnn"]


@pytest.fixture(scope="module")
def run(models, extractor, cache_dir):
    """One diagnostics call (the evaluation's fast sampler, reproduced below by the same call), x~ samples given."""
    smoothed, denoiser = models
    x_samples = fast_sample(smoothed, N, (1, 8, 8), discretized=False, generator=torch.Generator().manual_seed(3))
    metrics = smoothed_diagnostics(smoothed, denoiser, _cfg(), x_samples, generator=torch.Generator().manual_seed(9),
                                   log=QUIET, cache_dir=cache_dir)
    return metrics, x_samples


def test_every_diagnostic_is_logged_finite_with_a_standard_error(run):
    metrics, _ = run
    names = diagnostic_names("digits_cnn")
    assert set(metrics) == {*names.values(), *(f"{n}_se" for n in names.values()), "diagnostic_seconds"}
    for name in names.values():
        assert math.isfinite(metrics[name]) and metrics[name] > 0, name
        assert 0 < metrics[f"{name}_se"] < metrics[name], name
    assert metrics["diagnostic_seconds"] > 0


def test_realnoisy_is_the_distance_of_independently_noised_test_images(run, cache_dir):
    metrics, _ = run
    expected = _score(_independent_real_noisy(SIGMA), cache_dir)
    assert metrics["fd_digits_cnn_realnoisy"] == pytest.approx(expected, rel=1e-9)


def test_each_model_diagnostic_is_that_model_on_the_same_input(run, models, cache_dir):
    metrics, x_samples = run
    smoothed, denoiser = models
    x_real = _independent_real_noisy(SIGMA)
    onestep = gradient_denoise(smoothed, x_real, SIGMA, mode="full")
    assert metrics["fd_digits_cnn_onestep_realnoisy"] == pytest.approx(_score(onestep, cache_dir), rel=1e-6)
    twostep = fast_sample(denoiser, N, (1, 8, 8), discretized=True, x_noisy=x_real,
                          generator=torch.Generator().manual_seed(9))
    assert metrics["fd_digits_cnn_twostep_realnoisy"] == pytest.approx(_score(twostep, cache_dir), rel=1e-6)
    xtilde = _score(x_samples, cache_dir, reference_noise_std=SIGMA)
    assert metrics["fd_digits_cnn_xtilde"] == pytest.approx(xtilde, rel=1e-9)
    # the reference matters: the same x~ against the clean split is another number
    assert abs(_score(x_samples, cache_dir) - xtilde) > 10 * metrics["fd_digits_cnn_xtilde_se"]


def test_noisy_reference_is_mean_and_covariance_of_noised_test_features(extractor, tmp_path):
    lines = []
    mu, sigma = reference_statistics("digits", extractor, cache_dir=tmp_path, log=lines.append, noise_std=SIGMA)
    images = load_dataset("digits", "test")
    noisy = _independent_real_noisy(SIGMA, n=len(images)).clamp(-1, 1)  # the clamping the samples get
    with torch.no_grad():
        features = torch.cat([extractor(chunk)[0] for chunk in noisy.split(256)]).double().numpy()
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-5, atol=1e-6)
    path = reference_stats_path(tmp_path, "digits", "test", extractor, noisy, SIGMA)
    assert path.exists() and f"digits-test-noisy{SIGMA:g}-digits_cnn-n{len(images)}-" in path.name
    again = reference_statistics("digits", extractor, cache_dir=tmp_path, log=lines.append, noise_std=SIGMA)
    np.testing.assert_array_equal(again[1], sigma)
    assert len(lines) == 1, "cached: computed once"
    clean_mu, _ = reference_statistics("digits", extractor, cache_dir=tmp_path, log=QUIET)
    assert np.abs(clean_mu - mu).max() > 0.1, "the noisy reference is not the clean one"


def test_real_noisy_images_are_the_same_in_every_trial_and_epoch_and_scale_with_sigma():
    torch.manual_seed(123)  # the trial's global RNG state plays no part
    a = real_noisy_test_images(_cfg(seed=0), N)
    torch.manual_seed(456)
    b = real_noisy_test_images(_cfg(seed=7), N)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    clean = load_dataset("digits", "test")[torch.from_numpy(subset_indices(359, N))]
    c = real_noisy_test_images(_cfg(noise_std=2 * SIGMA), N)
    assert (c - clean).abs().mean() > 0.2 and not torch.equal(a, c)
    torch.testing.assert_close(c - clean, 2 * (a - clean))  # one eps, scaled: common random numbers
    eps = (a - clean) / SIGMA
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1) < 0.05  # 5120 N(0, 1) draws


def test_realnoisy_distance_is_the_same_at_another_epoch_and_seed(run, models, cache_dir):
    metrics, x_samples = run
    smoothed, denoiser = models
    other = smoothed_diagnostics(smoothed, denoiser, _cfg(seed=5), x_samples, log=QUIET, cache_dir=cache_dir,
                                 generator=torch.Generator().manual_seed(1))
    for name in ("fd_digits_cnn_realnoisy", "fd_digits_cnn_onestep_realnoisy", "fd_digits_cnn_xtilde"):
        assert other[name] == metrics[name], name
    assert other["fd_digits_cnn_twostep_realnoisy"] != metrics["fd_digits_cnn_twostep_realnoisy"], \
        "the denoiser's draws come from the generator"


def test_diagnostics_on_a_baseline_are_refused():
    with pytest.raises(ValueError, match="diagnostics=on needs kind=smoothed"):
        _cfg(noise_std=0.0, kind="baseline", diagnostics="on").validate()
    with pytest.raises(ValueError, match="diagnostics must be one of"):
        _cfg(diagnostics="yes").validate()
    with pytest.raises(ValueError, match="need a smoothed trial"):
        smoothed_diagnostics(None, None, _cfg(noise_std=0.0, kind="baseline"), None, generator=torch.Generator())
    assert [diagnostics_enabled(_cfg(diagnostics=m)) for m in ("auto", "on", "off")] == [True, True, False]
    assert not diagnostics_enabled(_cfg(noise_std=0.0, kind="baseline"))


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_evaluation_logs_diagnostics_unless_off(models, extractor, cache_dir, monkeypatch, mode):
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache_dir))  # the extractor trained above, not ~/.cache
    smoothed, denoiser = models
    cfg = TrialConfig(model=ModelConfig(nr_filters=8, nr_resnet=1, num_mixtures=2), data=DataConfig(noise_std=SIGMA),
                      eval=EvalConfig(num_eval_samples=N, diagnostics=mode, extractor="digits_cnn"))
    metrics = SampleEvaluator(cfg, (1, 8, 8), torch.device("cpu"), QUIET).evaluate(
        {"smoothed": smoothed, "denoiser": denoiser}, epoch=1)
    names = set(diagnostic_names("digits_cnn").values()) | {"diagnostic_seconds"}
    assert (names <= set(metrics)) == (mode == "auto") and bool(names & set(metrics)) == (mode == "auto")
    assert "fd_digits_cnn_twostep" in metrics
