"""Which model of a smoothed trial is at fault: its two models on real input, and p(x~) alone.

A smoothed trial's samples pass through two models: p(x~) draws x~, then the denoiser
p(x | x~) (two-step) or one gradient step on log p(x~) (one-step) turns x~ into x. A
worse `fd_E_twostep` does not say which of them got worse. These distances do, each
with its bootstrap SE (uncertainty.py), names in search_spaces.metric_names.DIAGNOSTICS:

- `fd_E_realnoisy`: x~ = x + sigma * eps of real test images vs the clean test split.
  The floor: what the noise alone costs, the same number for every trial at one sigma.
- `fd_E_onestep_realnoisy`: one-step denoising (the trial's gradient_mode) of those
  real x~ vs the clean split: p(x~)'s score on real input.
- `fd_E_twostep_realnoisy`: the denoiser's samples given those real x~ vs the clean
  split: p(x | x~) on real input.
- `fd_E_xtilde`: the smoothed model's own samples x~ vs real noisy test images at the
  same sigma (reference_stats.py): p(x~) alone.

Read: if `*_realnoisy` stay good while `fd_E_xtilde` and the model-sample distances get
worse, p(x~) is at fault; if `*_realnoisy` get worse, the denoiser (or p(x~)'s score).

The real images are `num_eval_samples` of the test split (data.subset_indices: one fixed
seeded choice, every epoch and trial), eps is reference_stats.fixed_noise (seeded per
image, independent of the trial's seed): every trial at one sigma sees the same x~, and
every sigma scales the same eps. Images go to the extractor clamped to [-1, 1] (evaluate.py),
both x~ samples and their real noisy reference alike: the comparison is of the clamped
distributions, equal when the unclamped ones are.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from search_spaces.metric_names import default_extractor, diagnostic_names, standard_error_name
from trainables.config import TrialConfig
from trainables.data import load_dataset, subset_indices
from trainables.quality.evaluate import evaluate_samples
from trainables.quality.reference_stats import real_noisy
from trainables.sampling.fast import fast_sample
from trainables.sampling.naive import gradient_denoise


def diagnostics_enabled(cfg: TrialConfig) -> bool:
    """cfg.eval.diagnostics resolved: auto is on for smoothed trials, off for baselines."""
    return {"on": True, "off": False}.get(cfg.eval.diagnostics, cfg.train.kind == "smoothed")


def real_noisy_test_images(cfg: TrialConfig, n: int) -> torch.Tensor:
    """x~ (min(n, test split), C, H, W) on the CPU, unclamped: x + sigma * eps of the seeded
    choice of n test images (data.subset_indices) with their fixed eps (reference_stats.fixed_noise)."""
    d = cfg.data
    images = load_dataset(d.dataset, "test", d.data_dir, image_size=d.image_size)  # (N, C, H, W) in [-1, 1]
    indices = subset_indices(len(images), n)
    return real_noisy(images[torch.from_numpy(indices)], indices, d.noise_std)


@torch.no_grad()
def smoothed_diagnostics(smoothed: torch.nn.Module, denoiser: torch.nn.Module, cfg: TrialConfig,
                         x_noisy_samples: Optional[torch.Tensor], *, generator: torch.Generator,
                         device=None, log: Callable[[str], None] = print, cache_dir=None,
                         sampler: Callable = fast_sample) -> dict[str, float]:
    """The four diagnostic distances of a smoothed trial's models, each with its SE, and their time.

    x_noisy_samples: p(x~)'s own samples (N, C, H, W), unclamped (two-step's first step); None
    draws cfg.eval.num_eval_samples of them here with `sampler` and `generator`.
    generator: the randomness of the denoiser's draws given the real x~ (and of x_noisy_samples
    when drawn here); the real x~ themselves never depend on it.
    device: where the extractor runs (None: the models'). cache_dir: the extractor's and the
    reference statistics' cache (None: cache_files.resolve_cache_dir).
    Returns {fd_E_realnoisy, fd_E_onestep_realnoisy, fd_E_twostep_realnoisy, fd_E_xtilde (each with
    `_se`), "diagnostic_seconds"}; fd_E is fid_inception for the Inception extractor.
    Callable on a checkpoint: generate.from_checkpoint(dir) gives the networks and the flat config
    (TrialConfig.from_flat).
    """
    start = time.perf_counter()
    if cfg.train.kind != "smoothed":
        raise ValueError(f"diagnostics need a smoothed trial (p(x~) and its denoiser), got kind={cfg.train.kind}")
    e, d = cfg.eval, cfg.data
    model_device = next(smoothed.parameters()).device
    x_real = real_noisy_test_images(cfg, e.num_eval_samples)  # (n, C, H, W) on the CPU
    n, shape = len(x_real), tuple(x_real.shape[1:])
    if n < e.num_eval_samples:
        log(f"diagnostics: the test split has {n} images, fewer than num_eval_samples {e.num_eval_samples}: "
            f"the real-noisy distances use {n}")
    if x_noisy_samples is None:
        x_noisy_samples = sampler(smoothed, e.num_eval_samples, shape, discretized=False, generator=generator, log=log)
    x_real_on_model = x_real.to(model_device)
    images = {  # diagnostic -> (images (N, C, H, W), sigma of the reference: 0 = the clean test split)
        "realnoisy": (x_real, 0.0),
        "onestep_realnoisy": (gradient_denoise(smoothed, x_real_on_model, d.noise_std, mode=e.gradient_mode), 0.0),
        "twostep_realnoisy": (sampler(denoiser, n, shape, discretized=True, x_noisy=x_real_on_model,
                                      generator=generator, log=log), 0.0),
        "xtilde": (x_noisy_samples, d.noise_std),
    }
    extractor = e.extractor or default_extractor(d.dataset)
    metrics: dict[str, float] = {}
    for diagnostic, name in diagnostic_names(extractor).items():
        batch, reference_noise_std = images[diagnostic]
        scores = evaluate_samples(batch.cpu(), d.dataset, extractor=extractor, sampler=diagnostic,
                                  data_dir=d.data_dir, cache_dir=cache_dir, log=log, image_size=d.image_size,
                                  inception_weights=e.inception_weights or None, device=device or model_device,
                                  reference_noise_std=reference_noise_std)
        metrics[name] = scores[name]  # evaluate_samples names it fd_E_<diagnostic> (sampler=diagnostic)
        metrics[standard_error_name(name)] = scores[standard_error_name(name)]
    metrics["diagnostic_seconds"] = time.perf_counter() - start
    return metrics
