"""Standard errors of the sample-quality numbers, as plain numpy (no torch, Ray or MLflow).

- Frechet distance: bootstrap over the generated samples. B resamples of the N
  generated feature vectors, drawn with replacement (seeded); the reference statistics
  (the real test split) stay fixed, since they are the same for every trial and
  every sampler. The standard error is the standard deviation (ddof=1) of the B
  distances. It measures how much the number moves with the draw of N samples, not
  the distance's bias at small N (the Frechet distance of N < D samples is biased
  upwards; compare only numbers of the same N).
- Inception Score: the score is the mean over disjoint splits of the samples, so its
  standard error is the standard deviation of the split scores (ddof=1) over
  sqrt(splits).

Cost of the bootstrap: one batched symmetric eigendecomposition of size min(N, D) per
resample, O(B min(N, D)^3), plus O(B N D min(N, D)) of matrix products.
"""
from __future__ import annotations

import math

import numpy as np

from trainables.quality.scores import _as_float64, _psd_sqrt

FD_BOOTSTRAP_RESAMPLES = 200   # B: the SE estimate's own relative error is ~1/sqrt(2B) = 5 %
FD_BOOTSTRAP_SEED = 0          # fixed: the same samples always give the same SE
_CHUNK_BYTES = 64 * 2 ** 20    # bound on the temporary (chunk, N, max(N, D)) float64 arrays


def resample_counts(n: int, num_resamples: int, seed: int) -> np.ndarray:
    """(B, N) float64: how often each of n samples is drawn in each of B resamples of size n."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=num_resamples).astype(np.float64)


def frechet_distance_bootstrap(features, mu_ref, sigma_ref, *, num_resamples: int = FD_BOOTSTRAP_RESAMPLES,
                               seed: int = FD_BOOTSTRAP_SEED) -> np.ndarray:
    """Frechet distances (B,) of B bootstrap resamples of `features` (N, D) to N(mu_ref, sigma_ref).

    Resample b holds sample n counts[b, n] times (resample_counts(N, B, seed)); its
    distance equals scores.frechet_distance(*feature_statistics(resample), mu_ref,
    sigma_ref) (unbiased covariance of the N drawn rows), computed for all b at once.
    Tr((S_b S_ref)^(1/2)) is the sum of square roots of the eigenvalues of
    R S_b R (R = S_ref^(1/2), size D) or, when N < D, of the N x N matrix with the same
    non-zero eigenvalues, diag(sqrt(w)) Xc S_ref Xc^T diag(sqrt(w)) / (N - 1).
    """
    x = _as_float64(features)
    mu_ref, sigma_ref = np.atleast_1d(_as_float64(mu_ref)), np.atleast_2d(_as_float64(sigma_ref))
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {x.shape}")
    n, dim = x.shape
    if mu_ref.shape != (dim,) or sigma_ref.shape != (dim, dim):
        raise ValueError(f"reference statistics must have shapes ({dim},), ({dim}, {dim}); "
                         f"got {mu_ref.shape}, {sigma_ref.shape}")
    if num_resamples < 2:
        raise ValueError(f"num_resamples must be >= 2, got {num_resamples}")
    # The distance is invariant under a common shift; centring keeps the covariances' sums exact.
    center = x.mean(axis=0)
    xc, mu_ref = x - center, mu_ref - center                     # (N, D), (D,)
    sigma_ref = 0.5 * (sigma_ref + sigma_ref.T)
    counts = resample_counts(n, num_resamples, seed)             # (B, N)
    means = counts @ xc / n                                      # (B, D)
    traces = (counts @ np.einsum("nd,nd->n", xc, xc) - n * np.einsum("bd,bd->b", means, means)) / (n - 1)
    if n < dim:
        trace_sqrt = _trace_sqrt_gram(xc, sigma_ref, counts)
    else:
        trace_sqrt = _trace_sqrt_features(xc, sigma_ref, counts, means)
    diff = means - mu_ref                                        # (B, D)
    distances = np.einsum("bd,bd->b", diff, diff) + traces + np.trace(sigma_ref) - 2.0 * trace_sqrt
    return np.maximum(distances, 0.0)


def _chunks(num_resamples: int, n: int, width: int):
    size = max(1, _CHUNK_BYTES // (8 * n * width))
    return (slice(start, min(start + size, num_resamples)) for start in range(0, num_resamples, size))


def _trace_sqrt_features(xc, sigma_ref, counts, means) -> np.ndarray:
    """(B,) Tr((S_b S_ref)^(1/2)) through the (B, D, D) matrices R S_b R."""
    n, dim = xc.shape
    root = _psd_sqrt(sigma_ref)                                  # (D, D)
    # One (B, N) x (N, D*D) product of the per-sample outer products where they fit in
    # memory (a batched (b, D, N) x (N, D) product is ~30x slower in numpy), else per resample.
    outer = (xc[:, :, None] * xc[:, None, :]).reshape(n, dim * dim) if 8 * n * dim * dim <= _CHUNK_BYTES else None
    out = np.empty(len(counts))
    for part in _chunks(len(counts), dim, dim):
        if outer is not None:
            second = (counts[part] @ outer).reshape(-1, dim, dim)  # (b, D, D): sum_n w_n xc_n xc_n^T
        else:
            second = np.stack([(xc * w[:, None]).T @ xc for w in counts[part]])
        cov = (second - n * means[part, :, None] * means[part, None, :]) / (n - 1)
        middle = root @ cov @ root
        middle = 0.5 * (middle + middle.transpose(0, 2, 1))
        out[part] = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum(axis=1)
    return out


def _trace_sqrt_gram(xc, sigma_ref, counts) -> np.ndarray:
    """(B,) the same through (B, N, N) matrices, for N < D.

    With Xc_b = Xc - 1 m_b^T and G = Xc S_ref Xc^T (N, N):
    Xc_b S_ref Xc_b^T = G - g 1^T - 1 g^T + c 1 1^T, g = G w / N, c = w^T G w / N^2.
    """
    n = xc.shape[0]
    gram = xc @ sigma_ref @ xc.T                                 # (N, N)
    gram = 0.5 * (gram + gram.T)
    out = np.empty(len(counts))
    for part in _chunks(len(counts), n, n):
        w = counts[part]                                         # (b, N)
        g = w @ gram / n                                         # (b, N); G symmetric
        c = np.einsum("bn,bn->b", g, w) / n                      # (b,)
        k = gram[None] - g[:, :, None] - g[:, None, :] + c[:, None, None]
        root_w = np.sqrt(w)
        middle = root_w[:, :, None] * k * root_w[:, None, :] / (n - 1)
        out[part] = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum(axis=1)
    return out


def frechet_distance_se(features, mu_ref, sigma_ref, *, num_resamples: int = FD_BOOTSTRAP_RESAMPLES,
                        seed: int = FD_BOOTSTRAP_SEED) -> float:
    """Bootstrap standard error of the Frechet distance of `features` (N, D) to the fixed reference."""
    values = frechet_distance_bootstrap(features, mu_ref, sigma_ref, num_resamples=num_resamples, seed=seed)
    return float(np.std(values, ddof=1))


def split_mean_se(split_std: float, splits: int) -> float:
    """Standard error of a mean over `splits` disjoint splits, from the splits' population std.

    scores.inception_score returns the population std (ddof=0) s of the k split scores;
    the sample std is s sqrt(k / (k - 1)), and the mean's standard error that over sqrt(k):
    s / sqrt(k - 1). NaN for a single split (no spread to measure).
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    return float(split_std) / math.sqrt(splits - 1) if splits > 1 else math.nan
