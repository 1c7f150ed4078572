"""The test evaluation of a smoothed model and its denoiser in one pass over the test batches:
both test NLLs and the two-step bits/dim bound, whose first noise draw is the batches' own x~."""
from __future__ import annotations

import time
from typing import Optional

import torch

from trainables.losses import DenoiserNLL, SmoothedNLL
from trainables.quality.bpd import gaussian_log_prob, two_step_bound_nats
from trainables.training import Batches, EpochStats, TrainUnit, batch_to_device


@torch.no_grad()
def evaluate_pair(smoothed: TrainUnit, denoiser: TrainUnit, batches: Batches, *, device, noise_std: float,
                  bound_draws: int, generator: Optional[torch.Generator]) -> dict[str, EpochStats]:
    """Summed NLLs of a smoothed model and its denoiser (evaluation models, eval mode) over `batches`
    of (x, x~) and, with bound_draws >= 1, the two-step bound (quality/bpd.two_step_bound_nats) of
    the clean x, in one pass: {"smoothed", "denoiser"[, "bound"]: EpochStats}.

    The bound's first noise draw is the batches' own x~, so its terms -log p(x~) and -log P(x | x~)
    are the NLLs already computed; draws beyond the first come from `generator`. The denoiser is
    read as the 256-bin distribution it is sampled from, whichever likelihood trained it, so the
    bound is on the discrete 8-bit -log P(x) (a continuous denoiser's NLL scores jittered x: there
    the discretized one costs one denoiser call more)."""
    models = smoothed.eval_model, denoiser.eval_model
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    discretized = DenoiserNLL("discretized")
    totals = {"smoothed": 0.0, "denoiser": 0.0, "bound": 0.0}
    dims = images = 0
    start = time.perf_counter()
    for batch in batches:
        x, x_noisy = batch_to_device(batch, device)
        nll_smoothed = smoothed.loss(models[0], x, x_noisy)  # (N,) nats
        nll_denoiser = denoiser.loss(models[1], x, x_noisy)
        totals["smoothed"] += float(nll_smoothed.sum())
        totals["denoiser"] += float(nll_denoiser.sum())
        dims += x.numel()
        images += x.shape[0]
        if bound_draws < 1:
            continue
        nll_discrete = discretized(models[1], x, x_noisy) if denoiser.loss.continuous else nll_denoiser
        term = gaussian_log_prob(x_noisy, x, noise_std) + nll_smoothed + nll_discrete  # the first draw
        if bound_draws > 1:
            rest = two_step_bound_nats(x, smoothed_log_prob=lambda z: -SmoothedNLL()(models[0], None, z),
                                       denoiser_log_prob=lambda clean, z: -discretized(models[1], clean, z),
                                       noise_std=noise_std, num_draws=bound_draws - 1, generator=generator)
            term = (term + (bound_draws - 1) * rest) / bound_draws
        totals["bound"] += float(term.sum())
    for m, mode in zip(models, modes):
        m.train(mode)
    seconds = time.perf_counter() - start
    names = ("smoothed", "denoiser", "bound") if bound_draws >= 1 else ("smoothed", "denoiser")
    return {name: EpochStats(totals[name], dims, images, seconds) for name in names}
