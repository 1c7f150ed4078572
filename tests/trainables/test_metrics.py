"""Frechet distance, feature statistics and Inception Score against formulas."""
import warnings

import numpy as np
import pytest
import scipy.linalg

from trainables.quality.scores import FewSamplesWarning, feature_statistics, frechet_distance, inception_score


def _random_spd(rng, dim, scale=1.0):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.5 * np.eye(dim))  # well conditioned


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=32), _random_spd(rng, 32, scale=50.0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_gaussians_match_closed_form():
    # For diagonal covariances: |mu1-mu2|^2 + sum_i (s1_i^(1/2) - s2_i^(1/2))^2.
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    var1, var2 = rng.uniform(0.1, 5.0, size=16), rng.uniform(0.1, 5.0, size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_closed_form():
    # W2^2 between N(1, 4) and N(-2, 9): 3^2 + (2 - 3)^2 = 10.
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(10.0, rel=1e-12)


def test_agrees_with_scipy_sqrtm_on_well_conditioned_case():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=24), rng.normal(size=24)
    s1, s2 = _random_spd(rng, 24, 3.0), _random_spd(rng, 24, 0.7)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # independent route: sqrtm of the non-symmetric product
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_symmetric_and_finite_for_singular_covariances():
    # 5 samples in 20 dimensions: rank-4 covariances, where sqrtm-based code returns complex/NaN.
    rng = np.random.default_rng(3)
    with pytest.warns(FewSamplesWarning):
        a = feature_statistics(rng.normal(size=(5, 20)))
    with pytest.warns(FewSamplesWarning):
        b = feature_statistics(rng.normal(size=(5, 20)) + 1.0)
    d_ab, d_ba = frechet_distance(*a, *b), frechet_distance(*b, *a)
    assert np.isfinite(d_ab) and d_ab > 0
    assert d_ab == pytest.approx(d_ba, rel=1e-8)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_are_mean_and_unbiased_covariance():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 500 >= 6: no warning
        mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    centred = x.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 499, rtol=1e-10)


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = inception_score(np.full((100, 10), 0.1))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_balanced_predictions_is_class_count():
    probs = np.eye(10)[np.arange(1000) % 10]  # each split of 100 holds every class 10 times
    mean, std = inception_score(probs, splits=10, shuffle_seed=None)
    assert mean == pytest.approx(10.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_splits_are_contiguous_chunks():
    # Sorted by class, each of 10 chunks holds one class: p(y|x) = p(y) in-chunk, IS = 1;
    # as one split the same rows are balanced: IS = 10.
    probs = np.eye(10)[np.repeat(np.arange(10), 20)]
    assert inception_score(probs, splits=10, shuffle_seed=None)[0] == pytest.approx(1.0)
    assert inception_score(probs, splits=1, shuffle_seed=None)[0] == pytest.approx(10.0)
    # Two chunks of 5 classes each: IS 5 per chunk.
    assert inception_score(probs, splits=2, shuffle_seed=None) == pytest.approx((5.0, 0.0))


def test_inception_score_std_over_unequal_splits():
    # Chunk 1 balanced over 2 classes (IS 2), chunk 2 uniform over 2 classes (IS 1).
    probs = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.5, 0.5]])
    assert inception_score(probs, splits=2, shuffle_seed=None) == pytest.approx((1.5, 0.5))


def test_inception_score_permutes_rows_with_seed_2020_before_the_splits():
    # The rows of the previous test after RandomState(2020).permutation(4), written out by
    # hand: the permutation is [2, 1, 3, 0] (checked), so both chunks mix one confident and
    # one uniform row: chunk p(y) = (0.25, 0.75) and (0.75, 0.25), IS exp(mean KL) per chunk.
    assert np.random.RandomState(2020).permutation(4).tolist() == [2, 1, 3, 0]
    probs = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.5, 0.5]])
    kl_confident = np.log(1 / 0.75)  # [0, 1] against p(y) = (0.25, 0.75)
    kl_uniform = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    per_chunk = np.exp((kl_confident + kl_uniform) / 2)  # both chunks are mirror images
    assert inception_score(probs, splits=2) == pytest.approx((per_chunk, 0.0), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("n, k, splits", [(200, 10, 10), (97, 1008, 3), (50, 10, 1)])
def test_inception_score_equals_torch_fidelity(n, k, splits):
    import torch
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    logits = np.random.default_rng(n + k).normal(scale=3.0, size=(n, k))
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=splits)  # their defaults: shuffle, seed 2020
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    mean, std = inception_score(probs, splits=splits)
    assert mean == pytest.approx(theirs[KEY_METRIC_ISC_MEAN], rel=1e-10)
    assert std == pytest.approx(theirs[KEY_METRIC_ISC_STD], rel=1e-8, abs=1e-12)
    unshuffled = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=False)
    assert inception_score(probs, splits=splits, shuffle_seed=None)[0] == pytest.approx(
        unshuffled[KEY_METRIC_ISC_MEAN], rel=1e-10)


def test_inception_score_rejects_logits_and_too_many_splits():
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.random.default_rng(0).normal(size=(20, 10)))
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((5, 10), 0.1), splits=10)
