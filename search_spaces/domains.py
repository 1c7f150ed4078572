"""The vocabulary of a search space: domains and the space itself, as plain data.

No Ray, Optuna or torch here: `study/` turns these into Optuna distributions.
Every key is a flat key of `trainables.config.TrialConfig` (the one name of a
hyperparameter everywhere); a test checks that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Float:
    low: float                  # inclusive lower bound
    high: float                 # inclusive upper bound
    log: bool = False           # sample log-uniformly (learning rates)


@dataclass(frozen=True)
class Int:
    low: int                    # inclusive lower bound
    high: int                   # inclusive upper bound
    log: bool = False           # sample log-uniformly


@dataclass(frozen=True)
class Choice:
    values: tuple               # the categories, in the order Optuna sees them


Domain = Union[Float, Int, Choice]

# Objective roles a space may name. "distance" and "score" resolve to the sample-quality
# metrics of the study's feature extractor (fd_<E> / fid_inception, is_<E> / is_inception);
# other entries are literal metric names. The value is the optimization mode.
OBJECTIVE_MODES = {"distance": "min", "score": "max", "bpd_bound": "min", "test_bpd": "min"}


@dataclass(frozen=True)
class SearchSpace:
    name: str                                   # registry key and the `--space` value
    description: str                            # one line for `--help` and the MLflow summary run
    params: dict[str, Domain]                   # searched by Optuna: TrialConfig flat key -> domain
    fixed: dict[str, Any]                       # set on every trial of the space
    fixed_per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> extra fixed values
    fixed_trials: tuple[dict[str, Any], ...] = ()  # fixed trials run beside the search, never told to Optuna
    objective: tuple[str, ...] = ("distance",)  # metrics to optimize (OBJECTIVE_MODES roles)
    mode: tuple[str, ...] = ("min",)            # "min" | "max" per objective
    default_num_samples: int = 8                # Optuna-proposed trials when --num-samples is not given

    def __post_init__(self):
        if len(self.objective) != len(self.mode):
            raise ValueError(f"space {self.name}: objective {self.objective} and mode {self.mode} differ in length")
        for role, mode in zip(self.objective, self.mode):
            if OBJECTIVE_MODES.get(role) != mode:
                raise ValueError(f"space {self.name}: objective {role!r} must have mode {OBJECTIVE_MODES.get(role)!r}")
        overlap = set(self.params) & set(self.fixed)
        if overlap:
            raise ValueError(f"space {self.name}: {sorted(overlap)} are both searched and fixed")
        if not self.params and not self.fixed_trials:
            raise ValueError(f"space {self.name}: nothing to run (no params and no fixed trials)")

    @property
    def searched(self) -> bool:
        """True when Optuna proposes trials; False for a fixed set of trials (e.g. `paper`)."""
        return bool(self.params)
