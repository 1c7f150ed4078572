"""Standard errors of the Frechet distance (bootstrap) and the Inception Score (splits),
against explicit resamples, brute-force Monte Carlo over fresh samples and the delta method.

Tolerances: a bootstrap SE from one set of N samples scatters by ~13 % around the true
SE (measured for the Gaussian case below), so the tests average a few independent sets;
an error of a factor sqrt(2) (resampling the reference too, ddof slips, SE of the mean
of the B values) is 41 % and cannot pass.
"""
import math
import warnings

import numpy as np
import pytest

from search_spaces.metric_names import standard_error_name
from trainables.quality.scores import FewSamplesWarning, feature_statistics, frechet_distance, inception_score
from trainables.quality.uncertainty import (
    FD_BOOTSTRAP_RESAMPLES, frechet_distance_bootstrap, frechet_distance_se, resample_counts, split_mean_se,
)


def _gaussian(rng, n, dim, mean, chol):
    return rng.normal(size=(n, dim)) @ chol.T + mean  # (n, dim)


@pytest.mark.parametrize("n, dim", [(200, 16), (30, 48)], ids=["features-path", "gram-path-n<d"])
def test_each_resample_is_the_distance_of_its_rows(n, dim):
    rng = np.random.default_rng(0)
    x = 3.0 * rng.normal(size=(n, dim)) + 5.0  # a large common mean: the centring must not lose digits
    a = rng.normal(size=(dim, dim))
    mu_ref, sigma_ref = rng.normal(size=dim), a @ a.T / dim + 0.1 * np.eye(dim)
    values = frechet_distance_bootstrap(x, mu_ref, sigma_ref, num_resamples=12, seed=7)
    counts = resample_counts(n, 12, seed=7).astype(int)
    assert counts.shape == (12, n) and np.all(counts.sum(axis=1) == n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        expected = [frechet_distance(*feature_statistics(x[np.repeat(np.arange(n), c)]), mu_ref, sigma_ref)
                    for c in counts]
    assert values == pytest.approx(expected, rel=1e-6)
    assert len(set(np.round(values, 6))) == 12, "resamples differ"
    again = frechet_distance_bootstrap(x, mu_ref, sigma_ref, num_resamples=12, seed=7)
    assert np.array_equal(values, again), "seeded"


def test_bootstrap_se_matches_monte_carlo_over_fresh_samples():
    rng = np.random.default_rng(1)
    dim, n = 8, 200
    chol = np.linalg.cholesky(_spd(rng, dim))
    mu_ref, sigma_ref = np.full(dim, 0.3), 1.5 * np.eye(dim)  # fixed reference statistics
    fresh = [frechet_distance(*feature_statistics(_gaussian(rng, n, dim, 0.0, chol)), mu_ref, sigma_ref)
             for _ in range(1000)]
    true_se = np.std(fresh, ddof=1)  # the spread of the distance over fresh draws of n samples
    boot = [frechet_distance_se(_gaussian(np.random.default_rng(100 + i), n, dim, 0.0, chol), mu_ref, sigma_ref)
            for i in range(8)]
    assert np.mean(boot) == pytest.approx(true_se, rel=0.15)


def test_bootstrap_se_matches_the_delta_method_when_the_mean_term_dominates():
    # Reference mean a = 5 away along e1, identity covariances: d ~ |xbar - mu_ref|^2, whose SE
    # is 2 a sigma / sqrt(n) (delta method); the covariance terms add O(d / n).
    dim, n, a = 4, 200, 5.0
    mu_ref = np.zeros(dim)
    mu_ref[0] = a
    boot = [frechet_distance_se(np.random.default_rng(i).normal(size=(n, dim)), mu_ref, np.eye(dim))
            for i in range(6)]
    assert np.mean(boot) == pytest.approx(2 * a / math.sqrt(n), rel=0.1)


def _spd(rng, dim):
    a = rng.normal(size=(dim, dim)) / math.sqrt(dim)
    return a @ a.T + 0.5 * np.eye(dim)


def test_bad_bootstrap_inputs():
    with pytest.raises(ValueError, match="reference"):
        frechet_distance_bootstrap(np.zeros((10, 3)), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="num_resamples"):
        frechet_distance_bootstrap(np.zeros((10, 3)), np.zeros(3), np.eye(3), num_resamples=1)
    assert FD_BOOTSTRAP_RESAMPLES >= 100


def test_split_se_is_the_std_of_the_split_scores_over_sqrt_k():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(10, 0.3), size=100)  # (100, 10)
    mean, std = inception_score(probs, splits=10)
    # Independent route: the population std over k splits -> sample std (ddof=1) / sqrt(k).
    per_split_sample_std = std * math.sqrt(10 / 9)
    assert split_mean_se(std, 10) == pytest.approx(per_split_sample_std / math.sqrt(10), rel=1e-12)
    assert math.isnan(split_mean_se(0.0, 1))


def test_inception_score_se_matches_monte_carlo_over_fresh_samples():
    # Class probabilities of N generated images: a sharp prediction on a class drawn from an
    # unbalanced marginal. The IS (mean over 10 splits of N = 200) varies over fresh draws by its SE.
    marginal = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.01, 0.01])

    def draw(rng, n=200):
        labels = rng.choice(10, size=n, p=marginal)
        return rng.dirichlet(np.full(10, 0.2), size=n) * 0.5 + 0.5 * np.eye(10)[labels]

    rng = np.random.default_rng(3)
    fresh = [inception_score(draw(rng))[0] for _ in range(600)]
    ses = [split_mean_se(inception_score(draw(np.random.default_rng(10 + i)))[1], 10) for i in range(12)]
    assert np.mean(ses) == pytest.approx(np.std(fresh, ddof=1), rel=0.15)


def test_standard_error_names_follow_the_metric():
    assert standard_error_name("fd_digits_cnn_twostep") == "fd_digits_cnn_twostep_se"
    assert standard_error_name("fid_inception") == "fid_inception_se"
