"""Reference statistics (mu, sigma) of a real data split in an extractor's feature space.

Cached per (dataset, split, extractor id, n, extractor fingerprint, sha256 of the images) as an .npz holding
mu (D,), sigma (D, D) and the sha256 of both; the hash is recomputed on every load and
a mismatch (a corrupted or edited file) is recomputed with a warning rather than
silently shifting every distance of a study.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainables.cache_files import atomic_write, resolve_cache_dir, sha256_of_arrays
from trainables.data import load_dataset, subset_indices
from trainables.quality.extractors import FeatureExtractor, run_extractor
from trainables.quality.scores import feature_statistics

class ReferenceStatsWarning(UserWarning):
    """A cached reference-statistics file failed verification and is being recomputed."""


def reference_stats_path(cache_dir: Path, dataset: str, split: str, extractor: FeatureExtractor,
                         images: torch.Tensor) -> Path:
    """One file per (dataset, split, extractor id, n, weights, images): the fingerprint tells
    retrained weights apart, the images' hash tells two folders (or data dirs) of one dataset apart."""
    data = sha256_of_arrays(images.numpy())[:12]
    name = f"{dataset}-{split}-{extractor.id}-n{len(images)}-{extractor.fingerprint[:12]}-{data}.npz"
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
                         log: Callable = print, image_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature mean (D,) and covariance (D, D), float64, of n real images of `split` (0: all).

    n above the split's size is capped to it; the cache key holds the n actually used.
    image_size: the side of celeba/folder images (data.image_shape).
    """
    images = load_dataset(dataset, split, data_dir, image_size=image_size)  # (N, C, H, W) in [-1, 1]
    n_used = len(images) if n <= 0 else min(n, len(images))
    images = images[torch.from_numpy(subset_indices(len(images), n_used))]
    path = reference_stats_path(resolve_cache_dir(cache_dir), dataset, split, extractor, images)
    cached = load_verified(path)
    if cached is not None:
        return cached
    log(f"{extractor.id}: reference statistics of {n_used} {dataset} {split} images -> {path.name}")
    features, _ = run_extractor(extractor, images, batch_size=batch_size, log=log, what=f"{dataset} {split} images")
    mu, sigma = feature_statistics(features)
    save_stats(path, mu, sigma)
    return mu, sigma
