"""Sample-quality metrics as plain numpy functions: Frechet distance and Inception Score.

They know nothing of feature extractors, Ray or MLflow: the caller hands in features
or class probabilities and names the result after its extractor (see
`trainables/quality/extractors.py`). Everything is computed in float64.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

# torch-fidelity's Inception Score permutes the N samples with np.random.RandomState(2020)
# before cutting the splits (isc_features_to_metric: samples_shuffle=True, rng_seed=2020).
TORCH_FIDELITY_SHUFFLE_SEED = 2020


class FewSamplesWarning(UserWarning):
    """Fewer samples than feature dimensions: the covariance estimate is singular."""


def _as_float64(array) -> np.ndarray:
    """numpy float64 copy of an array or a (CPU or device) torch tensor, without importing torch."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (D, D).

    Eigenvalues that rounding pushed below zero are clipped to zero: a covariance
    estimated from fewer samples than dimensions is singular, and its tiny negative
    eigenvalues would otherwise turn into NaNs.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    mu: (D,), sigma: (D, D). Tr((S1 S2)^(1/2)) is computed as the sum of the square
    roots of the eigenvalues of the symmetric PSD matrix sqrt(S1) S2 sqrt(S1), which
    is similar to S1 S2 and so has the same eigenvalues. Unlike scipy.linalg.sqrtm of
    the non-symmetric S1 S2 this needs only symmetric eigendecompositions, never
    returns complex parts, and stays finite for singular covariances. Float64
    throughout; the result is clipped at 0 (rounding can give -1e-12 for equal inputs).
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,):
        raise ValueError(f"means must both have shape ({dim},), got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must have shape ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} has non-finite entries")
    # Symmetrise: covariances from np.cov are symmetric only up to rounding.
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1  # (D, D), PSD up to rounding
    middle = 0.5 * (middle + middle.T)
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)))
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64 of features (N, D).

    Warns (FewSamplesWarning) when N < D: the covariance is then singular and the
    Frechet distance is biased upwards, so such numbers compare only with numbers of
    the same N.
    """
    features = _as_float64(features)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {features.shape}")
    n, dim = features.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features have non-finite entries")
    if n < dim:
        warnings.warn(
            f"{n} samples for {dim} feature dimensions: the covariance is singular and the "
            f"Frechet distance is biased; compare only numbers computed with the same sample count",
            FewSamplesWarning,
            stacklevel=2,
        )
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False).reshape(dim, dim)  # reshape: D = 1 gives a 0-d array
    return mu, sigma


def inception_score(probs, splits: int = 10,
                    shuffle_seed: Optional[int] = TORCH_FIDELITY_SHUFFLE_SEED) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, K).

    As torch-fidelity computes it: the rows are first permuted by
    np.random.RandomState(shuffle_seed).permutation(N) (None: kept in order), then cut
    into `splits` contiguous chunks (chunk i is rows i*N//splits .. (i+1)*N//splits);
    p(y) is the mean of each chunk. Returns the mean and the (population) standard
    deviation over chunks. With the default seed and probabilities softmax(logits) this
    equals torch-fidelity's isc_features_to_metric(logits, splits) (a test checks it).
    Ranges from 1 (every prediction equal to p(y)) to K (confident and balanced).
    Rows must be probability vectors; 0 * log 0 counts as 0.
    """
    probs = _as_float64(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, K), got {probs.shape}")
    n = probs.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs rows must be non-negative and sum to 1 (pass softmax outputs, not logits)")
    if shuffle_seed is not None:
        probs = probs[np.random.RandomState(shuffle_seed).permutation(n)]
    scores = []
    for i in range(splits):
        chunk = probs[i * n // splits: (i + 1) * n // splits]  # (n_i, K)
        marginal = chunk.mean(axis=0, keepdims=True)  # (1, K): p(y) of the chunk
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(chunk > 0, chunk * (np.log(chunk) - np.log(marginal)), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
