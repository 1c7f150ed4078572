"""Reference statistics (mu, sigma) of a real data split in an extractor's feature space.

Cached per (dataset, split, extractor id, n, extractor fingerprint, sha256 of the images) as an .npz holding
mu (D,), sigma (D, D) and the sha256 of both; the hash is recomputed on every load and
a mismatch (a corrupted or edited file) is recomputed with a warning rather than
silently shifting every distance of a study.

Real noisy images (noise_std > 0, the diagnostics' reference: quality/diagnostics.py): the
split's images x + sigma * eps, clamped to [-1, 1] as evaluate.py clamps every sample, eps of
image i from its own fixed seeded stream (fixed_noise), so the same in every trial, epoch and
subset; the file name carries sigma and the hash is of the noisy images themselves.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainables.atomic_write import atomic_write
from trainables.cache_files import resolve_cache_dir, sha256_of_arrays
from trainables.data import load_dataset, subset_indices
from trainables.quality.extractors import FeatureExtractor, run_extractor
from trainables.quality.scores import feature_statistics

NOISE_SEED = 20210503  # eps of real noisy images: fixed, independent of every trial's seed


def fixed_noise(indices: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """eps (n, C, H, W) float32 ~ N(0, I), image index i's from its own stream seeded (NOISE_SEED, i).

    Per index, not per call: a subset's eps is the one its images have in the whole split, and
    every sigma scales the same eps (common random numbers across the noise levels).
    """
    draws = [np.random.default_rng([NOISE_SEED, int(i)]).standard_normal(shape, dtype=np.float32) for i in indices]
    return torch.from_numpy(np.stack(draws)) if draws else torch.empty(0, *shape)


def real_noisy(images: torch.Tensor, indices: np.ndarray, noise_std: float) -> torch.Tensor:
    """x~ = x + noise_std * eps (N, C, H, W) of images = split[indices] (N, C, H, W); unclamped."""
    if len(images) != len(indices):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    return images + noise_std * fixed_noise(indices, tuple(images.shape[1:]))


class ReferenceStatsWarning(UserWarning):
    """A cached reference-statistics file failed verification and is being recomputed."""


def reference_stats_path(cache_dir: Path, dataset: str, split: str, extractor: FeatureExtractor,
                         images: torch.Tensor, noise_std: float = 0.0) -> Path:
    """One file per (dataset, split, extractor id, n, weights, images[, sigma]): the fingerprint tells
    retrained weights apart, the images' hash tells two folders (or data dirs) of one dataset apart
    (for noisy images, the hash of the noisy images: it changes with sigma and the noise)."""
    data = sha256_of_arrays(images.numpy())[:12]
    noisy = f"-noisy{noise_std:.6g}" if noise_std else ""
    name = f"{dataset}-{split}{noisy}-{extractor.id}-n{len(images)}-{extractor.fingerprint[:12]}-{data}.npz"
    return cache_dir / "reference_stats" / name


def load_verified(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(mu, sigma) from `path` if it exists and its stored sha256 matches; else None (warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            mu, sigma, expected = stored["mu"], stored["sigma"], str(stored["sha256"])
    except Exception as err:  # truncated or foreign file
        warnings.warn(f"unreadable reference statistics {path} ({type(err).__name__}: {err}); recomputing",
                      ReferenceStatsWarning, stacklevel=2)
        return None
    if sha256_of_arrays(mu, sigma) != expected:
        warnings.warn(f"reference statistics {path} fail their sha256 check (corrupted or edited); recomputing",
                      ReferenceStatsWarning, stacklevel=2)
        return None
    return mu, sigma


def save_stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    digest = np.array(sha256_of_arrays(mu, sigma))  # 0-d unicode array: loads without pickle
    atomic_write(path, lambda handle: np.savez(handle, mu=mu, sigma=sigma, sha256=digest))


def reference_statistics(dataset: str, extractor: FeatureExtractor, *, split: str = "test", n: int = 0,
                         data_dir: Optional[str] = None, cache_dir=None, batch_size: int = 256,
                         log: Callable = print, image_size: int = 0,
                         noise_std: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Feature mean (D,) and covariance (D, D), float64, of n real images of `split` (0: all).

    n above the split's size is capped to it; the cache key holds the n actually used.
    image_size: the side of celeba/folder images (data.image_shape).
    noise_std: > 0 for real noisy images, clamp(x + noise_std * fixed_noise, -1, 1) (module docstring).
    """
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    images = load_dataset(dataset, split, data_dir, image_size=image_size)  # (N, C, H, W) in [-1, 1]
    n_used = len(images) if n <= 0 else min(n, len(images))
    indices = subset_indices(len(images), n_used)
    images = images[torch.from_numpy(indices)]
    if noise_std:
        images = real_noisy(images, indices, noise_std).clamp(-1.0, 1.0)
    path = reference_stats_path(resolve_cache_dir(cache_dir), dataset, split, extractor, images, noise_std)
    cached = load_verified(path)
    if cached is not None:
        return cached
    what = f"noisy (sigma {noise_std:g}) " if noise_std else ""
    log(f"{extractor.id}: reference statistics of {n_used} {what}{dataset} {split} images -> {path.name}")
    features, _ = run_extractor(extractor, images, batch_size=batch_size, log=log, what=f"{dataset} {split} images")
    mu, sigma = feature_statistics(features)
    save_stats(path, mu, sigma)
    return mu, sigma
