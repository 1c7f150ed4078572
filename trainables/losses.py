"""The three model kinds as loss objects: what the network sees and how it is scored.

The training loop is shared; a model kind is only (input, likelihood). Each loss returns
per-image negative log-likelihoods in nats, (N,), summed over pixels and channels.
The likelihood is always evaluated in float32, also when the network runs under bf16
autocast (mixture log-densities lose too much in bf16).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.likelihoods import continuous_mol_log_prob, discretized_mol_log_prob


@dataclass(frozen=True)
class DiscretizedNLL:
    """Unsmoothed baseline: -log P(x) of clean 8-bit data under the 256-bin mixture."""

    continuous = False  # bits/dim needs no density-to-8-bit term

    def __call__(self, model, x: torch.Tensor, x_noisy: torch.Tensor) -> torch.Tensor:
        return -discretized_mol_log_prob(x, model(x).float()).sum(dim=(1, 2))


@dataclass(frozen=True)
class SmoothedNLL:
    """Smoothed model: -log p(x~) of the noisy data under the continuous mixture."""

    continuous = True  # a density over [-1, 1]-scaled data: bits/dim adds log2(127.5)

    def __call__(self, model, x: torch.Tensor, x_noisy: torch.Tensor) -> torch.Tensor:
        return -continuous_mol_log_prob(x_noisy, model(x_noisy).float()).sum(dim=(1, 2))


# The authors' denoiser scores the clean image jittered by this much Gaussian noise (their
# `clean_noise`, on the [-1, 1] scale: 1.3 of the 255 grey levels) under a continuous density.
CLEAN_NOISE_STD = 0.01


@dataclass(frozen=True)
class DenoiserNLL:
    """Denoiser: -log P(x | x~) of clean data given its noisy version.

    likelihood "discretized": P(x | x~) of the 8-bit x under the 256-bin mixture.
    likelihood "continuous" (the authors'): -log p(x' | x~) of x' = x + CLEAN_NOISE_STD * eps,
    eps ~ N(0, I) drawn from the global torch RNG on x's device (checkpointed, like dropout),
    under the continuous mixture; the network sees x' (conditioned on x~) as it would see x.
    Sampling and the two-step bound read the same mixture as the 256-bin distribution either way.
    """

    likelihood: str = "discretized"  # trainables.config.DENOISER_LIKELIHOODS

    @property
    def continuous(self) -> bool:  # a density over [-1, 1]-scaled data: bits/dim adds log2(127.5)
        return self.likelihood == "continuous"

    def __call__(self, model, x: torch.Tensor, x_noisy: torch.Tensor) -> torch.Tensor:
        if not self.continuous:
            return -discretized_mol_log_prob(x, model(x, x_noisy).float()).sum(dim=(1, 2))
        jittered = x + CLEAN_NOISE_STD * torch.randn_like(x)  # (N, C, H, W)
        return -continuous_mol_log_prob(jittered, model(jittered, x_noisy).float()).sum(dim=(1, 2))
