"""Autoregressive sampling, one-step gradient denoising and two-step sampling.

All randomness of a sample comes from one tuple of uniforms drawn for the whole image
(`likelihoods.draw_uniforms`), and pixel (i, j) only reads the uniforms at (i, j). Two
samplers given the same uniforms therefore produce the same image, which is how the
fast sampler is checked against this naive one.

Samples are returned unclamped (continuous ones are unbounded); clamp to [-1, 1] only
when turning them into images or metrics (`to_image_range`).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from trainables.likelihoods import (
    continuous_mol_log_prob,
    Uniforms,
    draw_uniforms,
    sample_continuous_mol,
    sample_discretized_mol,
)

def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """Clamp samples to the data range [-1, 1] for images and metrics."""
    return x.clamp(-1.0, 1.0)


def _pixel_sampler(discretized: bool):
    return sample_discretized_mol if discretized else sample_continuous_mol


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    n: int,
    shape: tuple[int, int, int],
    *,
    discretized: bool,
    x_noisy: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    uniforms: Optional[Uniforms] = None,
    temperature: float = 1.0,
    log: Optional[Callable[[str], None]] = None,
) -> torch.Tensor:
    """Naive autoregressive sampling: one full forward pass per pixel, (N, C, H, W).

    discretized: True for the baseline and the denoiser (8-bit clean data), False for
    the smoothed model. x_noisy: the condition of a denoiser, (N, C, H, W). The model
    is put in eval mode (no dropout) for the duration of the call.
    """
    c, h, w = shape
    device = next(model.parameters()).device
    if uniforms is None:
        uniforms = draw_uniforms(n, c, model.num_mixtures, h, w, generator=generator, device=device)
    draw = _pixel_sampler(discretized)
    x = torch.zeros(n, c, h, w, device=device)
    was_training = model.training
    model.eval()
    try:
        for i in range(h):
            for j in range(w):
                params = model(x, x_noisy) if x_noisy is not None else model(x)  # (N, P, H, W)
                pixel_uniforms = tuple(u[:, :, i : i + 1, j : j + 1] for u in uniforms)
                x[:, :, i, j] = draw(
                    params[:, :, i : i + 1, j : j + 1], channels=c, uniforms=pixel_uniforms, temperature=temperature
                )[:, :, 0, 0]
            if log is not None and (i + 1) % max(1, h // 4) == 0:
                log(f"  sampled row {i + 1}/{h}")
    finally:
        model.train(was_training)
    return x


def tweedie_denoise(
    x_noisy: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor], noise_std: float
) -> torch.Tensor:
    """x_bar = x~ + sigma^2 * grad_x~ log p(x~), the posterior mean E[x | x~] when p is exact.

    log_prob maps (N, C, H, W) to per-image log-densities (N,) in nats.
    """
    with torch.enable_grad():
        x_noisy = x_noisy.detach().requires_grad_(True)
        score = torch.autograd.grad(log_prob(x_noisy).sum(), x_noisy)[0]  # (N, C, H, W)
    return (x_noisy + noise_std**2 * score).detach()


def gradient_denoise(
    model: torch.nn.Module, x_noisy: torch.Tensor, noise_std: float, *, mode: str = "full", batch_size: int = 256
) -> torch.Tensor:
    """One-step denoising of smoothed-model samples, (N, C, H, W) -> (N, C, H, W).

    mode "full": the gradient of log p(x~) through the whole network, the exact score of
    the model's density. mode "fixed_output": the authors' variant, which holds the
    network's mixture parameters fixed and differentiates only the per-pixel density
    in x~ (cheaper, and ignores how earlier pixels move later pixels' parameters).
    """
    if mode not in ("full", "fixed_output"):
        raise ValueError(f"mode must be 'full' or 'fixed_output', got {mode!r}")
    was_training = model.training
    model.eval()
    out = []
    try:
        for chunk in x_noisy.split(batch_size):
            if mode == "full":
                log_prob = lambda z: continuous_mol_log_prob(z, model(z)).sum(dim=(1, 2))  # noqa: E731
            else:
                with torch.no_grad():
                    params = model(chunk)
                log_prob = lambda z, p=params: continuous_mol_log_prob(z, p).sum(dim=(1, 2))  # noqa: E731
            out.append(tweedie_denoise(chunk, log_prob, noise_std))
    finally:
        model.train(was_training)
    return torch.cat(out)


def two_step_sample(
    smoothed: torch.nn.Module,
    denoiser: torch.nn.Module,
    n: int,
    shape: tuple[int, int, int],
    *,
    generator: Optional[torch.Generator] = None,
    sampler: Callable = sample,
    temperature: float = 1.0,
    log: Optional[Callable[[str], None]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x~ from the smoothed model, then x ~ p(x | x~) from the denoiser: returns (x_noisy, x).

    `sampler` is `sample` or a drop-in with its signature (the fast sampler).
    """
    x_noisy = sampler(smoothed, n, shape, discretized=False, generator=generator, temperature=temperature, log=log)
    x = sampler(
        denoiser, n, shape, discretized=True, x_noisy=x_noisy, generator=generator, temperature=temperature, log=log
    )
    return x_noisy, x
