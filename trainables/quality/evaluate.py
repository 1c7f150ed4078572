"""The one entry point the trainables call to score generated images.

evaluate_samples(images, dataset) -> {"fd_digits_cnn": ..., "fd_digits_cnn_se": ...,
"is_digits_cnn": ..., "is_digits_cnn_std": ..., "is_digits_cnn_se": ..., "num_samples": N}:
Frechet distance to the real test split and Inception Score, both in the feature space
of one extractor whose id is in the names, each with its standard error
(trainables/quality/uncertainty.py).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from search_spaces.metric_names import default_extractor, metric_names, standard_error_name
from trainables.data import IMAGE_SHAPES, image_shape
from trainables.quality.extractors import build_extractor, run_extractor
from trainables.quality.scores import feature_statistics, frechet_distance, inception_score
from trainables.quality.reference_stats import reference_statistics
from trainables.quality.uncertainty import frechet_distance_se, split_mean_se

IS_SPLITS = 10  # the literature's split count; fewer when there are fewer samples
SLOW_SECONDS = 10.0  # runs longer than this log a summary line


def _checked_images(images: torch.Tensor, dataset: str, image_size: int = 0) -> torch.Tensor:
    """(N, C, H, W) float32 clamped to [-1, 1]; shape and finiteness checked against the dataset."""
    if dataset not in IMAGE_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(IMAGE_SHAPES)}")
    shape = image_shape(dataset, image_size)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"{dataset} samples must have shape (N, {', '.join(map(str, shape))}), "
                         f"got {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError(f"need at least 2 samples, got {len(images)}")
    images = images.detach().float()
    bad = int((~torch.isfinite(images)).flatten(1).any(dim=1).sum())
    if bad:
        raise ValueError(f"{bad} of {len(images)} samples contain NaN or inf values")
    # Samplers may overshoot [-1, 1] (continuous smoothed model, one-step denoising).
    return images.clamp(-1.0, 1.0)


def evaluate_samples(images: torch.Tensor, dataset: str, *, extractor: str = "", sampler: str = "",
                     data_dir: Optional[str] = None, cache_dir=None, inception_weights: Optional[str] = None,
                     reference_size: int = 0, batch_size: int = 256, device=None,
                     log: Callable = print, image_size: int = 0, reference_noise_std: float = 0.0) -> dict[str, float]:
    """Sample-quality metrics of generated images (N, C, H, W) in [-1, 1] (clamped here).

    extractor: an id of extractors.EXTRACTORS; "" takes the dataset's default.
    sampler: optional suffix of the names (direct | onestep | twostep).
    reference_size: real test images for the reference statistics (0: the whole split).
    device: where the extractor runs (None: the images' device).
    image_size: the side of celeba/folder images (0: their default; data.image_shape).
    reference_noise_std: > 0 compares with real noisy test images at this sigma, clamped like the
    samples (reference_stats.py), instead of the clean split: the reference of x~ samples.
    Returns {distance name: Frechet distance to the real test split, score name: IS
    mean over 10 splits, score name + "_std": IS std, "num_samples": N}, names from
    metric_names(extractor, sampler), e.g. fd_digits_cnn, is_digits_cnn, is_digits_cnn_std.
    """
    start = time.monotonic()
    extractor_id = extractor or default_extractor(dataset)
    names = metric_names(extractor_id, sampler)
    images = _checked_images(images, dataset, image_size)
    device = torch.device(device) if device is not None else images.device
    model = build_extractor(extractor_id, dataset, data_dir=data_dir, cache_dir=cache_dir, device=device,
                            log=log, inception_weights=inception_weights)
    mu_ref, sigma_ref = reference_statistics(dataset, model, n=reference_size, data_dir=data_dir,
                                             cache_dir=cache_dir, batch_size=batch_size, log=log,
                                             image_size=image_size, noise_std=reference_noise_std)
    features, probs = run_extractor(model, images, batch_size=batch_size, log=log, what="samples")
    mu, sigma = feature_statistics(features)  # warns when N < feature dim
    splits = min(IS_SPLITS, len(images))
    score, score_std = inception_score(probs, splits=splits)
    metrics = {
        names["distance"]: frechet_distance(mu, sigma, mu_ref, sigma_ref),
        standard_error_name(names["distance"]): frechet_distance_se(features, mu_ref, sigma_ref),
        names["score"]: score,
        names["score_std"]: score_std,
        standard_error_name(names["score"]): split_mean_se(score_std, splits),
        "num_samples": len(images),
    }
    elapsed = time.monotonic() - start
    if elapsed > SLOW_SECONDS:
        log(f"{extractor_id}: scored {len(images)} samples in {elapsed:.1f} s: "
            + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics
