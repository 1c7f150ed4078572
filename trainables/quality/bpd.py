"""Bits per dimension and the two-step (smoothed model + denoiser) upper bound on -log P(x).

Data live on the [-1, 1] scale (8-bit value v maps to v / 127.5 - 1). Log-likelihoods come
in nats; bits/dim are reported on the 8-bit scale, the convention of PixelCNN++ papers.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor

LOG2_DATA_SCALE = math.log2(127.5)  # [-1, 1] -> [0, 255] stretches every dimension by 127.5

Number = Union[float, Tensor]


def bits_per_dim(nll_nats: Number, num_dims: int, *, continuous: bool) -> Number:
    """Bits per dimension of a negative log-likelihood given in nats.

    nll_nats: float or tensor (e.g. (N,) per image) of -log p summed over num_dims
    dimensions. Discrete (continuous=False): nll / (D ln 2), bits per 8-bit value.
    Continuous (a density over data on [-1, 1]): the density on the 8-bit [0, 256)
    scale is p / 127.5 per dimension, so log2(127.5) bits are added per dimension
    (the smoothing authors' code leaves this term out; their numbers are not comparable).
    Returns the same type as nll_nats.
    """
    bpd = nll_nats / (num_dims * math.log(2.0))
    return bpd + LOG2_DATA_SCALE if continuous else bpd


def gaussian_log_prob(x_noisy: Tensor, mean: Tensor, std: Number) -> Tensor:
    """Per-image log N(x_noisy; mean, std^2 I) in nats: (N, ...) -> (N,), summed over dims."""
    std = torch.as_tensor(std, dtype=x_noisy.dtype, device=x_noisy.device)
    z = (x_noisy - mean) / std
    log_pdf = -0.5 * z.square() - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    return log_pdf.flatten(1).sum(dim=1)


def two_step_bound_nats(
    x: Tensor,
    *,
    smoothed_log_prob: Callable[[Tensor], Tensor],
    denoiser_log_prob: Callable[[Tensor, Tensor], Tensor],
    noise_std: float,
    num_draws: int,
    generator: Optional[torch.Generator],
    batched: bool = True,
) -> Tensor:
    """Monte-Carlo upper bound on -log P(x) of the two-step model, per image, in nats.

    The model is P(x) = int p(x~) P(x | x~) dx~ = E_q[p(x~) P(x | x~) / q(x~ | x)] with
    q(x~ | x) = N(x, sigma^2 I); by Jensen, -log P(x) <= E_q[-log p(x~) - log P(x | x~) + log q(x~ | x)].
    The expectation is estimated with `num_draws` draws x~ = x + sigma * eps (an unbiased
    estimate of the bound, not itself a bound for each draw).

    x: (N, C, H, W) clean data. smoothed_log_prob(x_noisy) -> (M,) total log-density of
    p(x~); denoiser_log_prob(x, x_noisy) -> (M,) total log P(x | x~), for any batch M of images.
    Returns (N,) nats.
    Units: p(x~) and q are both densities on the [-1, 1] scale, so their log 127.5 terms
    cancel; with a discretized denoiser the bound is on the discrete 8-bit -log P(x)
    (report it with bits_per_dim(..., continuous=False)).
    eps is drawn on the generator's device (x's without one) and moved to x's device, one
    (N, C, H, W) draw after another. batched (default): both models see all draws at once,
    (num_draws * N, C, H, W), one call each; otherwise one call per draw. The draws and the
    order of the sum are the same either way; the models' batch size is what differs.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    source = generator.device if generator is not None else x.device
    eps = [torch.randn(x.shape, generator=generator, dtype=x.dtype, device=source).to(x.device)
           for _ in range(num_draws)]
    if batched:
        x_noisy = torch.cat([x + noise_std * e for e in eps])  # (D * N, C, H, W), draw-major
        clean = x.repeat(num_draws, *([1] * (x.dim() - 1)))  # (D * N, C, H, W)
        log_q = gaussian_log_prob(x_noisy, clean, noise_std)  # (D * N,)
        terms = (log_q - smoothed_log_prob(x_noisy) - denoiser_log_prob(clean, x_noisy)).view(num_draws, -1)
    else:
        terms = []
        for e in eps:
            x_noisy = x + noise_std * e  # (N, C, H, W)
            terms.append(gaussian_log_prob(x_noisy, x, noise_std) - smoothed_log_prob(x_noisy)
                         - denoiser_log_prob(x, x_noisy))
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for term in terms:  # (N,) per draw, summed in draw order
        total = total + term
    return total / num_draws
