"""A study's wall time, estimated before it starts from a few measured steps on this process's device.

Measured (`measure`): a few training steps of the smoothed model p(x~) and its denoiser
at the trial config (the CPU probe uses a small batch, the GPU probe the trial's), a
no-grad forward pass of both, and the fast sampler of both on two tiny batches of 8x8
images of the dataset's channels. Stated model (`trial_seconds`, `estimate_seconds`):

- training, per epoch: train_images x (train s/image of both models); the CPU's time per
  image does not depend on the batch size (what the small-batch probe assumes);
- test bits/dim and the two-step bound, per epoch: test_images x (1 + bound_noise_draws)
  x (forward s/image of both models);
- sampling, per evaluation: a + b x num_eval_samples for both samplers, a and b fitted to
  the two tiny batches and scaled by H x W / 64 (the fast sampler does a fixed amount of
  work per pixel); the denoiser's prefill of x~ (about one forward pass) is left out;
- a baseline trial trains, tests and samples one network: half a smoothed trial without
  the bound;
- the study: the trials' sum over the trials running at once, and at least its longest
  trial. Every trial runs all epochs: ASHA's early stops only shorten a study.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Optional

from study.config import StudyConfig

# Standard split sizes (train, test) of the built-in datasets (digits: data.py's 80/20 split).
SPLIT_SIZES = {"digits": (1438, 359), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
               "cifar10": (50000, 10000)}
PROBE_STEPS = 2            # timed training steps (after one warm-up step) per model
CPU_PROBE_PIXELS = 4096    # CPU probe batch: about this many pixels (64 digits, 5 MNIST images, 2 CIFAR-10 images)
SAMPLE_PROBE_SIDE = 8      # the sampler is timed on (C, 8, 8) images ...
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


@dataclass(frozen=True)
class StudyPlan:
    """What a study will run, in the units of StepTimes."""
    smoothed_trials: int
    baseline_trials: int
    epochs: int
    evaluations: int            # sample-quality evaluations per trial
    train_images: int
    test_images: int
    eval_samples: int
    bound_noise_draws: int
    concurrency: int            # trials running at once

    @property
    def trials(self) -> int:
        return self.smoothed_trials + self.baseline_trials


def trial_seconds(t: StepTimes, p: StudyPlan, kind: str) -> float:
    """Wall time of one trial of `kind` (smoothed | baseline) by the module's stated model."""
    draws = p.bound_noise_draws if kind == "smoothed" else 0
    epoch = p.train_images * t.train_per_image + p.test_images * (1 + draws) * t.forward_per_image
    sampling = t.sample_fixed + p.eval_samples * t.sample_per_image
    total = p.epochs * epoch + p.evaluations * sampling
    return total if kind == "smoothed" else total / 2


def estimate_seconds(t: StepTimes, p: StudyPlan) -> float:
    smoothed, baseline = trial_seconds(t, p, "smoothed"), trial_seconds(t, p, "baseline")
    total = p.smoothed_trials * smoothed + p.baseline_trials * baseline
    longest = smoothed if p.smoothed_trials else baseline
    return max(total / max(1, min(p.concurrency, p.trials)), longest if p.trials else 0.0)


def estimate_line(t: StepTimes, p: StudyPlan) -> str:
    return (f"estimate: ~{estimate_seconds(t, p) / 60:.0f} min (measured {t.seconds_per_step:.3g} s/step on "
            f"{t.device}; {p.trials} trials, {min(p.concurrency, p.trials)} at a time)")


def evaluations_per_trial(max_epochs: int, eval_every: int) -> int:
    """Epochs with a sample-quality evaluation: every eval_every-th and the last (experiment.run_epoch)."""
    return sum(1 for e in range(1, max_epochs + 1) if e % eval_every == 0 or e == max_epochs)


def concurrency(cfg: StudyConfig, cpus: float, gpus: float, gpus_per_trial: float) -> int:
    """Trials Tune runs at once: --max-concurrent, else as many as the CPUs (and GPUs) allow."""
    slots = math.floor(cpus / cfg.cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        slots = min(slots, math.floor(gpus / gpus_per_trial + 1e-9))
    if cfg.max_concurrent > 0:
        slots = min(slots, cfg.max_concurrent) if slots > 0 else cfg.max_concurrent
    return max(1, slots)


def split_sizes(dataset: str, data_dir: Optional[str]) -> Optional[tuple[int, int]]:
    """(train, test) images: the standard sizes, else counted from the files; None if unreadable."""
    if dataset in SPLIT_SIZES:
        return SPLIT_SIZES[dataset]
    try:
        from trainables.data import load_dataset

        return len(load_dataset(dataset, "train", data_dir)), len(load_dataset(dataset, "test", data_dir))
    except (OSError, ValueError, RuntimeError):
        return None


def plan_of(cfg: StudyConfig, sizes: tuple[int, int], slots: int) -> StudyPlan:
    trial = cfg.trial
    trials = [{**trial, **t} for t in cfg.fixed_trials]
    trials += [{**trial, "kind": trial.get("kind", "smoothed")}] * (cfg.num_samples if cfg.searched else 0)
    baseline = sum(t.get("kind") == "baseline" for t in trials)
    train, test = sizes
    subset = trial.get("train_subset")  # a TrialConfig field only where the data code supports it
    train = min(train, subset) if subset else train
    test = min(test, trial["max_eval_images"]) if trial["max_eval_images"] else test
    return StudyPlan(smoothed_trials=len(trials) - baseline, baseline_trials=baseline, epochs=trial["max_epochs"],
                     evaluations=evaluations_per_trial(trial["max_epochs"], trial["eval_every"]),
                     train_images=train, test_images=test, eval_samples=trial["num_eval_samples"],
                     bound_noise_draws=trial["bound_noise_draws"], concurrency=slots)


def probe_overrides(cfg: StudyConfig) -> dict:
    """A smoothed trial at the upper end of every searched range (the costlier side)."""
    out = {"kind": "smoothed"}
    for key, domain in cfg.searched.items():
        out[key] = domain["values"][0] if domain["type"] == "choice" else domain["high"]
    if float(out.get("noise_std", cfg.trial.get("noise_std", 0.0))) <= 0:
        out["noise_std"] = 0.3
    return out


def measure(cfg: StudyConfig, device=None) -> StepTimes:
    """Time the smoothed model and its denoiser of this study's trial config (module docstring)."""
    import torch

    from trainables.data import IMAGE_SHAPES

    trial = cfg.trial_config(probe_overrides(cfg))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = IMAGE_SHAPES.get(trial.data.dataset)
    if shape is None:
        raise ValueError(f"no image shape known for dataset {trial.data.dataset!r}")
    threads = torch.get_num_threads()
    if device.type == "cpu":  # a trial trains on cpus_per_trial threads (trainables/tune)
        torch.set_num_threads(max(1, int(cfg.cpus_per_trial)))
    try:
        return _measure(trial, shape, device)
    finally:
        torch.set_num_threads(threads)


def _measure(trial, shape, device) -> StepTimes:
    import torch

    from trainables.losses import DenoiserNLL, SmoothedNLL
    from trainables.pixelcnnpp import PixelCNNpp
    from trainables.sampling.fast import fast_sample
    from trainables.training import TrainUnit, train_epoch

    m, t = trial.model, trial.train
    c, h, w = shape
    batch = t.batch_size if device.type == "cuda" else min(t.batch_size, max(2, CPU_PROBE_PIXELS // (c * h * w)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, c, h, w), generator=gen) * 2 - 1                  # (B, C, H, W) in [-1, 1]
    pair = (x, x + trial.data.noise_std * torch.randn(x.shape, generator=gen))
    train = forward = 0.0
    nets = []
    for loss, conditional in ((SmoothedNLL(), False), (DenoiserNLL(), True)):
        net = PixelCNNpp(c, m.nr_filters, m.nr_resnet, m.num_mixtures, m.dropout, conditional).to(device)
        unit = TrainUnit.create(net, loss, lr=t.lr, lr_decay=t.lr_decay, mixed_precision=t.mixed_precision)
        train_epoch(unit, [pair], epoch=1, device=device)                     # warm-up
        train += train_epoch(unit, [pair] * PROBE_STEPS, epoch=1, device=device).seconds / (PROBE_STEPS * batch)
        with torch.no_grad():
            start = _clock(device)
            unit.loss(net.eval(), *(v.to(device) for v in pair))
            forward += (_clock(device) - start) / batch
        nets.append(net)
    fixed, per_image = _sampler_times(nets, c, device, fast_sample)
    scale = h * w / SAMPLE_PROBE_SIDE ** 2
    return StepTimes(device.type, train, forward, fixed * scale, per_image * scale, t.batch_size)


def _sampler_times(nets, channels: int, device, fast_sample) -> tuple[float, float]:
    """(a, b) of time = a + b n for both samplers on (C, 8, 8) images, from two batch sizes."""
    import torch

    side, times = SAMPLE_PROBE_SIDE, []
    for n in (SAMPLE_PROBE_BATCHES[0], *SAMPLE_PROBE_BATCHES):  # the first call warms up (allocations, kernels)
        start = _clock(device)
        noisy = fast_sample(nets[0], n, (channels, side, side), discretized=False)
        fast_sample(nets[1], n, (channels, side, side), discretized=True, x_noisy=noisy.clamp(-1, 1))
        times.append(_clock(device) - start)
        del noisy
    (n1, n2), (t1, t2) = SAMPLE_PROBE_BATCHES, times[1:]
    slope = max(0.0, (t2 - t1) / (n2 - n1))
    return max(0.0, t1 - slope * n1), slope


def _clock(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def local_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of this machine, as a local Ray would count them."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return float(cpus), float(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def hardware_note(cfg: StudyConfig, gpus: float) -> Optional[str]:
    """One line where the dataset's study size expects GPUs and there are none, else None."""
    from study.config import sized_for

    dataset = cfg.trial["dataset"]
    if sized_for(dataset) != "gpu" or gpus > 0:
        return None
    return (f"note: the default {dataset} study size is meant for a GPU cluster (one GPU per trial) and this "
            "machine has no GPU; --smoke-test or smaller --set nr_filters=... --max-epochs ... fit a CPU")


def announce(cfg: StudyConfig, cpus: float, gpus: float, gpus_per_trial: float, log=print,
             times: Optional[StepTimes] = None) -> None:
    """Print the hardware note (if any) and the estimate line; `times` injects measured StepTimes."""
    note = hardware_note(cfg, gpus)
    if note:
        log(note)
    sizes = split_sizes(cfg.trial["dataset"], cfg.trial.get("data_dir"))
    if sizes is None:
        log(f"estimate: unavailable (the size of dataset {cfg.trial['dataset']!r} is unknown until its files are read)")
        return
    try:
        times = times or measure(cfg)
    except (RuntimeError, ValueError) as err:  # e.g. out of memory at this config
        log(f"estimate: unavailable (the probe step failed: {str(err).splitlines()[0]})")
        return
    log(estimate_line(times, plan_of(cfg, sizes, concurrency(cfg, cpus, gpus, gpus_per_trial))))


def local_gpus_per_trial(cfg: StudyConfig, gpus: float) -> float:
    """GPUs per trial as preflight.resolve_gpus would choose them on this machine (never fails)."""
    from study.preflight import resolve_gpus

    if cfg.gpus_per_trial is not None:
        return cfg.gpus_per_trial
    return resolve_gpus(cfg, {"GPU": gpus})
