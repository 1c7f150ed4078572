"""A study's wall time, estimated before it starts from a few measured steps on this process's device.

Measured (`measure`, trainables/step_timing.py): a few training steps of the smoothed
model p(x~) and its denoiser at the trial config (the CPU probe uses a small batch, the GPU
probe the trial's), a no-grad forward pass of both, and the fast sampler of both on two
tiny batches of 8x8 images of the dataset's channels. Stated model (`trial_seconds`, `estimate_seconds`):

- training, per epoch: train_images x (train s/image of both models); the CPU's time per
  image does not depend on the batch size (what the small-batch probe assumes);
- test bits/dim, per epoch: test_images x (forward s/image of both models); the two-step
  bound, on the epochs it runs (every epoch, or with `bound_every=eval` only the evaluation
  epochs): test_images x (bound_noise_draws - 1) x (forward s/image of both models), its first
  draw being the test pass's own (pair_evaluation.evaluate_pair; a continuous denoiser's extra call
  for that draw is left out);
- sampling, per evaluation: a + b x num_eval_samples for both samplers, a and b fitted to
  the two tiny batches and scaled by H x W / 64 (the fast sampler does a fixed amount of
  work per pixel); the denoiser's prefill of x~ (about one forward pass) is left out;
- a baseline trial trains, tests and samples one network: half a smoothed trial without
  the bound;
- the study: the trials' sum over the trials running at once, and at least its longest
  trial. Every trial runs all epochs: ASHA's early stops only shorten a study. With
  `--repeats R` every configuration counts R times (one trial per seed).

Left out: the diagnostics of a smoothed evaluation (trainables/quality/diagnostics.py: four more
Fréchet distances on cached or real images; ~25-35 s per 28x28 evaluation on the 2-core VM of
docs/results.md), which no probe measures yet.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from study.config import StudyConfig, sized_for
from trainables.step_timing import StepTimes

# Standard split sizes (train, test) of the built-in datasets (digits: data.py's 80/20 split).
SPLIT_SIZES = {"digits": (1438, 359), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
               "cifar10": (50000, 10000)}


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
    repeats: int = 1            # trials (seeds) per configuration, counted in smoothed_ and baseline_trials
    bound_epochs: Optional[int] = None  # epochs with the two-step bound (bound_every); None: every epoch
    threads: int = 1            # torch threads per trial (--cpus-per-trial; benchmarks/bench_cores.py: why 1)

    @property
    def trials(self) -> int:
        return self.smoothed_trials + self.baseline_trials


def trial_seconds(t: StepTimes, p: StudyPlan, kind: str) -> float:
    """Wall time of one trial of `kind` (smoothed | baseline) by the module's stated model."""
    draws = p.bound_noise_draws if kind == "smoothed" else 0
    epoch = p.train_images * t.train_per_image + p.test_images * t.forward_per_image
    bound = p.test_images * max(0, draws - 1) * t.forward_per_image  # the first draw is the test pass's
    sampling = t.sample_fixed + p.eval_samples * t.sample_per_image
    bound_epochs = p.epochs if p.bound_epochs is None else p.bound_epochs
    total = p.epochs * epoch + bound_epochs * bound + p.evaluations * sampling
    return total if kind == "smoothed" else total / 2


def estimate_seconds(t: StepTimes, p: StudyPlan) -> float:
    smoothed, baseline = trial_seconds(t, p, "smoothed"), trial_seconds(t, p, "baseline")
    total = p.smoothed_trials * smoothed + p.baseline_trials * baseline
    longest = smoothed if p.smoothed_trials else baseline
    return max(total / max(1, min(p.concurrency, p.trials)), longest if p.trials else 0.0)


def estimate_line(t: StepTimes, p: StudyPlan) -> str:
    seeds = f" = {p.trials // p.repeats} configurations x {p.repeats} seeds" if p.repeats > 1 else ""
    return (f"estimate: ~{estimate_seconds(t, p) / 60:.0f} min (measured {t.seconds_per_step:.3g} s/step on "
            f"{t.device}; {p.trials} trials{seeds}, {min(p.concurrency, p.trials)} at a time, {p.threads} "
            f"thread{'s' if p.threads > 1 else ''} each)")


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


def split_sizes(dataset: str) -> Optional[tuple[int, int]]:
    """(train, test) images of a built-in dataset; None for others (CelebA, a folder of images:
    counting them would mean reading every file, too slow for a dry run)."""
    return SPLIT_SIZES.get(dataset)


def plan_of(cfg: StudyConfig, sizes: tuple[int, int], slots: int) -> StudyPlan:
    trial = cfg.trial
    trials = [{**trial, **t} for t in cfg.fixed_trials]
    trials += [{**trial, "kind": trial.get("kind", "smoothed")}] * (cfg.num_samples if cfg.searched else 0)
    trials *= cfg.repeats  # one trial per seed
    baseline = sum(t.get("kind") == "baseline" for t in trials)
    train, test = sizes
    subset = trial.get("train_subset")  # a TrialConfig field only where the data code supports it
    train = min(train, subset) if subset else train
    test = min(test, trial["max_eval_images"]) if trial["max_eval_images"] else test
    evaluations = evaluations_per_trial(trial["max_epochs"], trial["eval_every"])
    bound_epochs = evaluations if trial.get("bound_every") == "eval" else trial["max_epochs"]
    return StudyPlan(smoothed_trials=len(trials) - baseline, baseline_trials=baseline, epochs=trial["max_epochs"],
                     evaluations=evaluations, bound_epochs=bound_epochs,
                     train_images=train, test_images=test, eval_samples=trial["num_eval_samples"],
                     bound_noise_draws=trial["bound_noise_draws"], concurrency=slots, repeats=cfg.repeats,
                     threads=max(1, int(cfg.cpus_per_trial)))


def probe_overrides(cfg: StudyConfig) -> dict:
    """A smoothed trial at the upper end of every searched range (the costlier side)."""
    out = {"kind": "smoothed"}
    for key, domain in cfg.searched.items():
        out[key] = domain["values"][0] if domain["type"] == "choice" else domain["high"]
    if float(out.get("noise_std", cfg.trial.get("noise_std", 0.0))) <= 0:
        out["noise_std"] = 0.3
    return out


def measure(cfg: StudyConfig) -> StepTimes:
    """Time this study's smoothed trial (the upper end of every searched range) on this process's device."""
    from trainables.step_timing import measure_step_times

    return measure_step_times(cfg.trial_config(probe_overrides(cfg)), threads=max(1, int(cfg.cpus_per_trial)))


def local_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of this machine, as a local Ray would count them."""
    from trainables.step_timing import visible_gpus

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return float(cpus), float(visible_gpus())


def hardware_note(cfg: StudyConfig, gpus: float) -> Optional[str]:
    """One line where the dataset's study size expects GPUs and there are none, else None."""
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
    sizes = split_sizes(cfg.trial["dataset"])
    if sizes is None:
        log(f"estimate: unavailable (the split sizes of dataset {cfg.trial['dataset']!r} are not known before "
            "its files are read)")
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
