"""Two uncertainties of a configuration's mean over its seeds, never to be mixed up.

- t95 (seeds): the half-width of the 95% Student-t interval of the mean over the n seeds
  (repeats, `--repeats`) of one configuration, t_{0.975, n-1} * sd / sqrt(n) with the sample
  standard deviation sd (ddof = 1). It covers everything that changes with the seed:
  training noise, the generated samples, the evaluation draws. None (NaN) below n = 2:
  one seed says nothing about seed-to-seed variation.
- se (bootstrap): the standard error of the same mean from the finite number of generated
  samples alone, sqrt(sum_i se_i^2) / n over the seeds' logged `<metric>_se` (each the
  bootstrap over that trial's samples; IS: over its splits). NaN where a seed lacks one.

A NaN value (a pruned repeat that never evaluated) is left out: n counts the seeds with a
value. Pure numpy and scipy (no ray, no model code); study/groups.py restates these for the
study's own summary (study never imports analysis) and its test checks the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from scipy import stats

LEVEL = 0.95


def t_quantile(n: int) -> float:
    """t_{0.975, n-1}, the quantile of a two-sided 95% interval of a mean of n values; NaN below n = 2."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) if n >= 2 else float("nan")


def finite(values: Iterable) -> np.ndarray:
    """The values as floats without NaN/inf/None (a repeat that never evaluated)."""
    array = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


@dataclass(frozen=True)
class SeedInterval:
    mean: float        # mean over the n seeds with a value; NaN if none
    half_width: float  # t95: t_{0.975, n-1} * sd / sqrt(n); NaN below n = 2
    n: int             # seeds with a value

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def seed_interval(values: Iterable) -> SeedInterval:
    """The mean over seeds with its 95% t-interval across seeds (module docstring)."""
    kept = finite(values)
    n = len(kept)
    if n == 0:
        return SeedInterval(float("nan"), float("nan"), 0)
    if n == 1:
        return SeedInterval(float(kept[0]), float("nan"), 1)
    return SeedInterval(float(kept.mean()), t_quantile(n) * float(kept.std(ddof=1)) / np.sqrt(n), n)


def t95(values: Iterable) -> float:
    """Half-width of the 95% t-interval of the mean across seeds; NaN below two values."""
    return seed_interval(values).half_width


def mean_se(values: Iterable, ses: Iterable) -> float:
    """Bootstrap standard error of the mean over the seeds with a value: sqrt(sum se_i^2) / n; NaN if a
    seed with a value lacks its se or no seed has a value."""
    pairs = [(v, s) for v, s in zip(values, ses) if len(finite([v]))]
    if not pairs:
        return float("nan")
    errors = np.asarray([np.nan if s is None else s for _, s in pairs], dtype=float)
    return float(np.sqrt((errors ** 2).sum()) / len(pairs)) if np.isfinite(errors).all() else float("nan")


def describe_t95(n: Optional[int] = None) -> str:
    """How the report names the interval across seeds, e.g. `± t95 (seeds, n=3)`."""
    return "± t95 (seeds" + (f", n={n})" if n is not None else ")")


def describe_se(samples) -> str:
    """How the report names the sampling-noise standard error, e.g. `SE (bootstrap, 200 samples)`."""
    return f"SE (bootstrap, {samples} samples)"


SINGLE_SEED_NOTE = ("**One seed per configuration**: every interval here (± SE) covers the sampling noise of the "
                    "generated samples only, not seed-to-seed variation, which is often larger; run the study with "
                    "`--repeats 3` for a 95% interval across seeds.")
