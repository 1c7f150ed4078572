"""Frozen configuration of one trial: model, data, training, evaluation.

Every field name is the one name of its idea across the project: the search-space
key, the flat key Ray Tune passes, the MLflow param and the analysis column.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

MODEL_KINDS = ("baseline", "smoothed")  # a "smoothed" trial trains p(x~) and its denoiser p(x|x~)
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "folder")
GRADIENT_MODES = ("full", "fixed_output")
DIAGNOSTIC_MODES = ("auto", "on", "off")  # auto: on for smoothed trials, off for baselines
BOUND_SCHEDULES = ("epoch", "eval")  # when the two-step bound is computed: every epoch | evaluation epochs
PRECISIONS = ("auto", "bf16", "off")
DENOISER_LIKELIHOODS = ("discretized", "continuous")  # trainables/losses.py: DenoiserNLL
# How x~ enters the denoiser (pixelcnnpp.py): "encoder", a non-causal encoder into every gated resnet;
# "stacked", x~ above x in one 2H x W image (the authors' code; its receptive field must cover all of x~).
DENOISER_CONDITIONINGS = ("encoder", "stacked")


@dataclass(frozen=True)
class ModelConfig:
    nr_filters: int = 32        # channels of every gated resnet
    nr_resnet: int = 2          # gated resnets per up-pass stage (down pass: n, n+1, n+1)
    num_mixtures: int = 5       # logistic mixture components per pixel
    dropout: float = 0.0        # channel-wise dropout inside gated resnets (authors: 0.5 on every dataset)
    denoiser_conditioning: str = "encoder"  # how x~ enters p(x | x~) (pixelcnnpp.py); checkpoints record it
    allow_partial_coverage: bool = False    # stacked: accept a depth at which some clean pixels miss part of x~


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"                 # digits | mnist | fashion_mnist | cifar10 | celeba | folder
    data_dir: Optional[str] = None          # where torchvision datasets live (None: ~/.cache)
    noise_std: float = 0.3                  # smoothing sigma on the [-1, 1] scale; 0 = unsmoothed
    # Subsets and image files (issue 9).
    train_subset: int = 0                   # training images used, the same seeded choice in every trial (0: all)
    image_size: int = 0                     # side S of celeba/folder images, resized to 3 x S x S (0: 32)


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "smoothed"          # baseline (sigma = 0, discretized) | smoothed (p(x~) + denoiser)
    batch_size: int = 64            # images per optimizer step (the denoiser's too, unless set below)
    denoiser_batch_size: int = 0    # images per step of the denoiser; 0: batch_size (authors: 80 and 50)
    denoiser_likelihood: str = "discretized"  # discretized P(x|x~) | continuous: authors' density of x + 0.01 N(0,1)
    lr: float = 2e-3                # Adam learning rate (authors: 2e-4 on CIFAR-10)
    lr_decay: float = 0.999995      # per-step exponential decay of lr (authors' value)
    ema_decay: float = 0.0          # bias-corrected EMA of weights for evaluation (training.EMA); 0 disables
    grad_clip: float = 0.0          # max global grad norm; 0 disables
    max_epochs: int = 20            # epochs per trial
    seed: int = 0                   # seeds init, data order, noise and sampling
    mixed_precision: str = "auto"   # auto: bf16 autocast on CUDA, fp32 elsewhere | bf16 | off
    compile: bool = False           # torch.compile the training forward pass (worth it on GPUs)
    workers_per_trial: int = 1      # data-parallel processes per trial (Ray Train DDP when > 1); batch_size stays global

    def unit_batch_size(self, unit: str) -> int:
        """Images per optimizer step of model `unit` (baseline | smoothed | denoiser)."""
        return (self.denoiser_batch_size or self.batch_size) if unit == "denoiser" else self.batch_size


@dataclass(frozen=True)
class EvalConfig:
    eval_every: int = 5             # epochs between sample-quality evaluations (and the last epoch)
    num_eval_samples: int = 256     # generated images per evaluation
    bound_noise_draws: int = 4      # noise draws per test image for the two-step bpd bound
    bound_every: str = "epoch"      # two-step bound every epoch | eval: only when samples are evaluated
    gradient_mode: str = "full"     # one-step denoising gradient: full | fixed_output
    extractor: str = ""             # feature extractor id; "" picks the dataset default
    inception_weights: str = ""     # TF-Inception weights file; "" = env var / torch hub cache
    max_eval_images: int = 0        # cap on test images for bpd, a fixed seeded choice (0: all)
    diagnostics: str = "auto"       # real-noisy and x~ distances (quality/diagnostics.py): auto | on | off


@dataclass(frozen=True)
class TrialConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_flat(self) -> dict[str, Any]:
        """One flat dict (Ray Tune's config, MLflow params): field name -> value."""
        flat: dict[str, Any] = {}
        for part in _PARTS:
            flat.update(dataclasses.asdict(getattr(self, part)))
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "TrialConfig":
        """Build from a flat dict; unknown keys are an error, missing keys take defaults."""
        known = {f.name: part for part, sub in _PARTS.items() for f in dataclasses.fields(sub)}
        unknown = sorted(set(flat) - set(known))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        groups: dict[str, dict[str, Any]] = {part: {} for part in _PARTS}
        for key, value in flat.items():
            groups[known[key]][key] = value
        cfg = cls(**{part: _PARTS[part](**_coerce(_PARTS[part], vals)) for part, vals in groups.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first bad value."""
        m, d, t, e = self.model, self.data, self.train, self.eval
        checks = [
            (t.kind in MODEL_KINDS, f"kind must be one of {MODEL_KINDS}, got {t.kind!r}"),
            (d.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {d.dataset!r}"),
            (d.noise_std >= 0, f"noise_std must be >= 0, got {d.noise_std}"),
            (d.train_subset >= 0, f"train_subset must be >= 0 (0: all images), got {d.train_subset}"),
            (d.image_size == 0 or d.dataset in ("celeba", "folder"),
             f"image_size applies to celeba and folder only; {d.dataset} keeps its own size (use 0)"),
            (d.image_size >= 0 and d.image_size % 4 == 0,
             f"image_size must be a multiple of 4 (the network halves it twice), got {d.image_size}"),
            (e.max_eval_images >= 0, f"max_eval_images must be >= 0 (0: all), got {e.max_eval_images}"),
            (t.kind != "smoothed" or d.noise_std > 0, "a smoothed trial needs noise_std > 0 (use kind=baseline for 0)"),
            (t.kind != "baseline" or d.noise_std == 0, f"a baseline trial has noise_std = 0, got {d.noise_std}"),
            (m.num_mixtures >= 1, f"num_mixtures must be >= 1, got {m.num_mixtures}"),
            (m.nr_filters >= 1 and m.nr_resnet >= 1, "nr_filters and nr_resnet must be >= 1"),
            (0 <= m.dropout < 1, f"dropout must be in [0, 1), got {m.dropout}"),
            (m.denoiser_conditioning in DENOISER_CONDITIONINGS,
             f"denoiser_conditioning must be one of {DENOISER_CONDITIONINGS}, got {m.denoiser_conditioning!r}"),
            (t.batch_size >= 1, f"batch_size must be >= 1, got {t.batch_size}"),
            (t.denoiser_batch_size >= 0, f"denoiser_batch_size must be >= 0, got {t.denoiser_batch_size}"),
            (t.denoiser_likelihood in DENOISER_LIKELIHOODS,
             f"denoiser_likelihood must be one of {DENOISER_LIKELIHOODS}, got {t.denoiser_likelihood!r}"),
            (t.lr > 0, f"lr must be > 0, got {t.lr}"),
            (0 < t.lr_decay <= 1, f"lr_decay must be in (0, 1], got {t.lr_decay}"),
            (0 <= t.ema_decay < 1, f"ema_decay must be in [0, 1), got {t.ema_decay}"),
            (t.grad_clip >= 0, f"grad_clip must be >= 0, got {t.grad_clip}"),
            (t.max_epochs >= 1, f"max_epochs must be >= 1, got {t.max_epochs}"),
            (t.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}"),
            (t.workers_per_trial >= 1, f"workers_per_trial must be >= 1, got {t.workers_per_trial}"),
            (t.batch_size % t.workers_per_trial == 0, f"batch_size {t.batch_size} must be divisible by "
             f"workers_per_trial {t.workers_per_trial} (each worker trains on batch_size / workers_per_trial images)"),
            (e.eval_every >= 1, f"eval_every must be >= 1, got {e.eval_every}"),
            (e.num_eval_samples >= 2, f"num_eval_samples must be >= 2, got {e.num_eval_samples}"),
            (e.bound_noise_draws >= 1, f"bound_noise_draws must be >= 1, got {e.bound_noise_draws}"),
            (e.bound_every in BOUND_SCHEDULES, f"bound_every must be one of {BOUND_SCHEDULES}, got {e.bound_every!r}"),
            (e.gradient_mode in GRADIENT_MODES, f"gradient_mode must be one of {GRADIENT_MODES}"),
            (e.diagnostics in DIAGNOSTIC_MODES, f"diagnostics must be one of {DIAGNOSTIC_MODES}, got {e.diagnostics!r}"),
            (e.diagnostics != "on" or t.kind == "smoothed", "diagnostics=on needs kind=smoothed: a baseline trial has "
             "no p(x~) or denoiser to diagnose (diagnostics=auto turns them on for smoothed trials only)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self._check_stacked_coverage()

    def _check_stacked_coverage(self) -> None:
        """A stacked denoiser (x~ above x) sees x~ only through its receptive field: refuse a depth at
        which some clean pixel misses part of x~, unless allow_partial_coverage (pixelcnnpp.stacked_coverage)."""
        m, d = self.model, self.data
        if self.train.kind != "smoothed" or m.denoiser_conditioning != "stacked" or m.allow_partial_coverage:
            return
        from trainables.data import image_shape
        from trainables.pixelcnnpp import full_coverage_depth, stacked_coverage

        _, h, w = image_shape(d.dataset, d.image_size)
        seen = stacked_coverage(m.nr_resnet, h, w)
        if seen < h * w:
            depth = full_coverage_depth(h, w)
            deeper = f"nr_resnet >= {depth}, " if depth else ""
            raise ValueError(f"denoiser_conditioning=stacked at nr_resnet={m.nr_resnet} on {d.dataset} ({h}x{w}): only "
                             f"{seen} of {h * w} clean pixels see all of x~ (the receptive field of the {2 * h}x{w} "
                             f"stacked image is too small); use {deeper}denoiser_conditioning=encoder, or "
                             f"allow_partial_coverage=true")


_PARTS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


def _finite(key: str, value: Any, what: str) -> float:
    """float(value), refusing text that is no number and nan/inf (a trial would train on garbage)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be {what}, got {value!r}")
    return number


def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
    """Cast values to the field's type (Tune/Optuna hand back numpy scalars, MLflow strings)."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        kind = types[key]
        if value is None or kind.startswith("Optional"):
            out[key] = value
        elif kind == "int":
            number = _finite(key, value, "an integer")
            if number != int(number):
                raise ValueError(f"{key} must be an integer, got {value!r}")
            out[key] = int(number)
        elif kind == "float":
            out[key] = _finite(key, value, "a finite number")
        elif kind == "bool":
            if str(value).lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            out[key] = str(value).lower() in ("true", "1")
        else:
            out[key] = str(value)
    return out
