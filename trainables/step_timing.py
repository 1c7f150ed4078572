"""A few measured steps of one smoothed trial, for the study's wall-time estimate (study/estimate.py).

Timed on this process's device: training steps of the smoothed model p(x~) and of its
denoiser at the trial config (on a CPU a small batch, about CPU_PROBE_PIXELS pixels, whose
time per image the full batch shares; on a GPU the trial's batch), a no-grad forward pass
of both, and the fast sampler of both on (C, 8, 8) images of two tiny batch sizes, fitted as
a + b n and scaled to the dataset's H x W (the fast sampler does a fixed amount of work per
pixel). Random images stand in for the data: a step's time does not depend on the pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trainables.config import TrialConfig
from trainables.data import IMAGE_SHAPES, image_shape
from trainables.losses import DenoiserNLL, SmoothedNLL
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling.fast import fast_sample
from trainables.training import TrainUnit, train_epoch

PROBE_STEPS = 2                # timed training steps (after one warm-up step) per model
CPU_PROBE_PIXELS = 4096        # CPU probe batch: ~this many pixels (64 digits, 5 MNIST, 2 CIFAR-10 images)
SAMPLE_PROBE_SIDE = 8          # the sampler is timed on (C, 8, 8) images ...
SAMPLE_PROBE_BATCHES = (1, 4)  # ... of these batch sizes


@dataclass(frozen=True)
class StepTimes:
    """Seconds measured for one smoothed trial (p(x~) and its denoiser together)."""
    device: str                 # "cpu" | "cuda": where they were measured
    train_per_image: float      # one training step of both models, per image
    forward_per_image: float    # one no-grad forward pass of both models, per image
    sample_fixed: float         # both samplers, per call, at the dataset's image size
    sample_per_image: float     # both samplers, per image, at the dataset's image size
    batch_size: int             # the trial's batch size

    @property
    def seconds_per_step(self) -> float:
        return self.train_per_image * self.batch_size


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def measure_step_times(trial: TrialConfig, threads: int = 1, device=None) -> StepTimes:
    """StepTimes of `trial` (a smoothed config) on `device` (default: CUDA if there is one),
    on `threads` CPU threads as a trial with that many CPUs trains (trainables/tune)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if trial.data.dataset not in IMAGE_SHAPES:
        raise ValueError(f"no image shape known for dataset {trial.data.dataset!r}")
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        return _measure(trial, image_shape(trial.data.dataset, trial.data.image_size), device)
    finally:
        torch.set_num_threads(before)


def _measure(trial: TrialConfig, shape: tuple[int, int, int], device: torch.device) -> StepTimes:
    m, t = trial.model, trial.train
    c, h, w = shape
    batch = t.batch_size if device.type == "cuda" else min(t.batch_size, max(2, CPU_PROBE_PIXELS // (c * h * w)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, c, h, w), generator=gen) * 2 - 1                  # (B, C, H, W) in [-1, 1]
    pair = (x, x + trial.data.noise_std * torch.randn(x.shape, generator=gen))
    train = forward = 0.0
    nets = []
    for loss, conditional in ((SmoothedNLL(), False), (DenoiserNLL(), True)):
        net = PixelCNNpp(c, m.nr_filters, m.nr_resnet, m.num_mixtures, m.dropout, conditional,
                         m.denoiser_conditioning).to(device)
        unit = TrainUnit.create(net, loss, lr=t.lr, lr_decay=t.lr_decay, mixed_precision=t.mixed_precision)
        train_epoch(unit, [pair], epoch=1, device=device)                     # warm-up
        train += train_epoch(unit, [pair] * PROBE_STEPS, epoch=1, device=device).seconds / (PROBE_STEPS * batch)
        with torch.no_grad():
            start = _clock(device)
            unit.loss(net.eval(), *(v.to(device) for v in pair))
            forward += (_clock(device) - start) / batch
        nets.append(net)
    fixed, per_image = _sampler_times(nets, c, device)
    scale = h * w / SAMPLE_PROBE_SIDE ** 2
    return StepTimes(device.type, train, forward, fixed * scale, per_image * scale, t.batch_size)


def _sampler_times(nets: list, channels: int, device: torch.device) -> tuple[float, float]:
    """(a, b) of time = a + b n for both samplers on (C, 8, 8) images, from two batch sizes."""
    side, times = SAMPLE_PROBE_SIDE, []
    for n in (SAMPLE_PROBE_BATCHES[0], *SAMPLE_PROBE_BATCHES):  # the first call warms up (allocations, kernels)
        start = _clock(device)
        noisy = fast_sample(nets[0], n, (channels, side, side), discretized=False)  # (n, C, 8, 8)
        fast_sample(nets[1], n, (channels, side, side), discretized=True, x_noisy=noisy.clamp(-1, 1))
        times.append(_clock(device) - start)
    (n1, n2), (t1, t2) = SAMPLE_PROBE_BATCHES, times[1:]
    slope = max(0.0, (t2 - t1) / (n2 - n1))  # noise can make the two-point slope negative
    return max(0.0, t1 - slope * n1), slope


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
