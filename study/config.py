"""The study configuration: one frozen dataclass, resolved once from the CLI and validated.

Resolution order of the values every trial shares (later wins):
TrialConfig defaults -> the dataset's study size (study_size: a study sized for its hardware) ->
the space's `fixed` and `fixed_per_dataset` -> SMOKE_TEST_SIZE (with --smoke-test) ->
CLI flags (--dataset, --max-epochs, --seed, --noise-std, --num-mixtures, --set KEY=VALUE).
Searched keys are proposed per trial and may not be fixed from the CLI.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional

from search_spaces import OBJECTIVE_MODES, SPACES, Choice, Float, Int, SearchSpace
from trainables.config import TrialConfig

# Per dataset: the values every trial of a default study shares, and the hardware they are sized
# for (SIZED_FOR). Before a study starts it prints its estimated wall time (study/estimate.py).
# digits: measured on a 2-core CPU, the default `--space noise_sweep` study (6 searched trials +
# the baseline, 2 at a time, ASHA rungs at epochs 2 and 4) ends within ~10 minutes (README).
STUDY_SIZE: dict[str, Any] = {
    "nr_filters": 16, "nr_resnet": 1, "num_mixtures": 5, "batch_size": 64, "lr": 2e-3,
    "max_epochs": 8, "eval_every": 2, "num_eval_samples": 200, "bound_noise_draws": 1,
}
# 28x28 on CPU: the digits network, 12x the pixels, so fewer epochs, a fixed seeded 5,000 of the
# 60,000 training images (train_subset; 0 = all), and test bits/dim on 1000 of the 10,000 test
# images (the distance's reference statistics still use all of them). Evaluated on the bias-corrected
# EMA of the weights (ema_decay 0.99, ~100 steps of the 78 per epoch) for 6 epochs: on Fashion-MNIST at
# sigma 0.5 over 3 seeds the raw weights' distances swung between evaluations by more than smoothing
# moves them; the EMA's fell at nearly every evaluation for every seed, and at epoch 6 every seed had
# two-step < one-step < baseline (docs/results.md, "Learning curves"; measured on Fashion-MNIST only).
MNIST_CPU_SIZE: dict[str, Any] = {**STUDY_SIZE, "max_epochs": 6, "eval_every": 2, "max_eval_images": 1000,
                                  "train_subset": 5000, "ema_decay": 0.99}
# 32x32x3 on a GPU cluster, one GPU per trial: a smaller network than the paper's (64 filters,
# 2 resnets per stage against 160 and 5, ~1/15 of the work per image), 30 epochs, and 1000
# samples per evaluation for the Inception distance.
GPU_SIZE: dict[str, Any] = {
    "nr_filters": 64, "nr_resnet": 2, "num_mixtures": 10, "batch_size": 64, "lr": 1e-3,
    "max_epochs": 30, "eval_every": 10, "num_eval_samples": 1000, "bound_noise_draws": 1,
}
STUDY_SIZES: dict[str, dict[str, Any]] = {"digits": STUDY_SIZE, "mnist": MNIST_CPU_SIZE,
                                          "fashion_mnist": MNIST_CPU_SIZE, "cifar10": GPU_SIZE}
SIZED_FOR: dict[str, str] = {"digits": "cpu", "mnist": "cpu", "fashion_mnist": "cpu", "cifar10": "gpu"}
DEFAULT_SIZE, DEFAULT_SIZED_FOR = GPU_SIZE, "gpu"  # any other dataset (CelebA, a folder of images: >= 32x32 RGB)
# --smoke-test: the same study machinery in about a minute (the end-to-end tests use it).
SMOKE_TEST_SIZE: dict[str, Any] = {
    "nr_filters": 8, "nr_resnet": 1, "num_mixtures": 3, "batch_size": 128, "max_epochs": 2, "eval_every": 2,
    "num_eval_samples": 32, "bound_noise_draws": 1, "max_eval_images": 64, "denoiser_batch_size": 0,
    # the machinery, not the science: at depth 1 a stacked denoiser (the paper space's) misses part of x~ at 28x28
    "allow_partial_coverage": True,
}
SMOKE_TEST_NUM_SAMPLES = 2
ASHA_MIN_TRIALS = 5                 # "auto" scheduler: ASHA from this many searched trials on, else FIFO
SCHEDULERS = ("auto", "asha", "fifo")
CHECKPOINT_ARTIFACTS = ("best", "none")
RUNTIME_FIELDS = ("address",)       # may differ when a study resumes (a new head node); all else must match
# GPUs per trial when --gpus-per-trial is not given and the cluster has GPUs (preflight.resolve_gpus):
GPUS_PER_TRIAL_BY_DATASET = {"digits": 0.25}  # tiny models share a GPU
GPUS_PER_TRIAL_OTHERWISE = 1.0


class StudyError(ValueError):
    """A bad input: the CLI prints its one-line message and exits non-zero."""


@dataclass(frozen=True)
class StudyConfig:
    name: str                       # Ray experiment dir under storage_path and the MLflow experiment name
    space: str                      # key of search_spaces.SPACES
    storage_path: str               # absolute local path or URI (s3://...) that holds the study directory
    mlflow_uri: str                 # MLflow tracking URI; default: absolute sqlite:/// file in the study dir
    num_samples: int                # trials Optuna proposes; for a space with nothing to search, repeats (seeds)
    objective: tuple[str, ...]      # metric names optimized, e.g. ("fd_digits_cnn",) or (..., "bpd_bound")
    mode: tuple[str, ...]           # "min" | "max" per objective
    extractor: str                  # feature extractor id of the sample-quality metrics
    scheduler: str                  # "asha" | "fifo" (resolved from "auto")
    trial: dict[str, Any]           # flat TrialConfig values shared by all trials (searched keys excluded)
    searched: dict[str, dict]       # searched key -> domain as data ({"type": "float", "low": .., ...})
    fixed_trials: tuple[dict, ...]  # trials run beside the search: key -> value over `trial`
    seed: int                       # seeds Optuna's TPE sampler and every trial's `seed`
    address: Optional[str]          # Ray cluster address ("auto", "ray://host:10001"); None: local Ray
    cpus_per_trial: float           # CPUs reserved per trial (also its torch threads)
    gpus_per_trial: Optional[float] # GPUs per trial, fractions share a GPU; None: decided from the cluster
    max_concurrent: int             # trials running at once; 0: as many as resources allow
    max_failures: int               # retries of a failed trial, each from its latest checkpoint
    num_to_keep: int                # checkpoints kept per trial: the best by the first objective + the latest
    checkpoint_artifact: str        # "best": the trial's best checkpoint goes to MLflow; "none"
    smoke_test: bool                # the tiny study of the end-to-end tests
    repeats: int                    # seeds per configuration: each runs as trials with seed, seed + 1, ...;
                                    # Optuna sees one trial per configuration (trainables/tune/repeats.py)
    optuna_storage: Optional[str] = None  # Optuna RDB URL (--optuna-storage); None: optuna.db in a local
                                    # study directory, memory on remote storage (orchestrate.optuna_storage)

    @property
    def multi_objective(self) -> bool:
        return len(self.objective) > 1

    @property
    def configurations(self) -> int:
        """Configurations the study runs: Optuna's proposals (where it searches) and the fixed trials."""
        return self.num_samples * bool(self.searched) + len(self.fixed_trials)

    @property
    def total_trials(self) -> int:
        """Tune trials in all: every configuration with `repeats` seeds."""
        return self.repeats * self.configurations

    def trial_config(self, overrides: Optional[dict] = None) -> TrialConfig:
        """The TrialConfig of one trial: shared values + its searched or fixed-trial values."""
        return TrialConfig.from_flat({**self.trial, **(overrides or {})})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StudyConfig":
        raw = json.loads(text)
        for key in ("objective", "mode"):
            raw[key] = tuple(raw[key])
        raw["fixed_trials"] = tuple(raw["fixed_trials"])
        raw.setdefault("repeats", 1)  # a study.json from before --repeats: one seed per configuration
        return cls(**raw)


def domain_to_data(domain) -> dict:
    if isinstance(domain, Float):
        return {"type": "float", "low": domain.low, "high": domain.high, "log": domain.log}
    if isinstance(domain, Int):
        return {"type": "int", "low": domain.low, "high": domain.high, "log": domain.log}
    if isinstance(domain, Choice):
        return {"type": "choice", "values": list(domain.values)}
    raise TypeError(f"unknown domain {domain!r}")


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise StudyError(f"unknown space {name!r}; valid spaces: {', '.join(SPACES)}")
    return SPACES[name]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> dict; values parsed as JSON where they parse (numbers), else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StudyError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def resolve_objective(spec: Optional[str], space: SearchSpace, names: dict[str, str]) -> tuple[tuple, tuple]:
    """Objective roles (space default or `--objective a,b`) -> (metric names, modes)."""
    roles = tuple(r.strip() for r in spec.split(",")) if spec else space.objective
    bad = [r for r in roles if r not in OBJECTIVE_MODES]
    if bad or not roles or len(set(roles)) != len(roles):
        raise StudyError(f"--objective takes distinct entries of {', '.join(OBJECTIVE_MODES)}, got {spec!r}")
    return tuple(names.get(r, r) for r in roles), tuple(OBJECTIVE_MODES[r] for r in roles)


def study_size(dataset: str) -> dict[str, Any]:
    """The shared trial values of a default study on `dataset` (STUDY_SIZES, else DEFAULT_SIZE)."""
    return dict(STUDY_SIZES.get(dataset, DEFAULT_SIZE))


def sized_for(dataset: str) -> str:
    """"cpu" | "gpu": the hardware the dataset's study size is meant for."""
    return SIZED_FOR.get(dataset, DEFAULT_SIZED_FOR)


def shared_trial_values(space: SearchSpace, dataset: str, smoke_test: bool, cli: dict[str, Any]) -> dict[str, Any]:
    """The flat values every trial shares, in the resolution order of the module docstring."""
    values = {**study_size(dataset), **space.fixed, **space.fixed_per_dataset.get(dataset, {})}
    if smoke_test:
        values.update(SMOKE_TEST_SIZE)
    values.update(cli)
    values["dataset"] = dataset
    clash = sorted(set(cli) & set(space.params))
    if clash:
        raise StudyError(f"{', '.join(clash)} is searched by space {space.name!r}; it cannot be fixed from the CLI")
    return values


def check_trials(shared: dict[str, Any], space: SearchSpace, fixed_trials: tuple[dict, ...]) -> None:
    """Every fixed trial and both corners of every searched range must make a valid TrialConfig."""
    probes = list(fixed_trials)
    for corner in ("low", "high"):
        probe = {}
        for key, domain in space.params.items():
            probe[key] = getattr(domain, corner) if not isinstance(domain, Choice) else domain.values[0]
        if probe:
            probes.append(probe)
    for probe in probes or [{}]:
        try:
            TrialConfig.from_flat({**shared, **probe})
        except (ValueError, TypeError) as err:
            raise StudyError(str(err).splitlines()[0]) from None
