"""Configuration groups: the repeats of one configuration with different seeds (`--repeats R`).

A trial's group and its hash are search_spaces/config_groups.py's (study and analysis share it);
here: its label for people and the statistics over its seeds.

The statistics over a group's seeds (mean, its 95% t-interval across seeds, the bootstrap
standard error of the mean) are those of analysis/intervals.py, restated here because
`study` never imports `analysis` (tests/study/test_repeats.py checks the two agree):
- t95 = t_{0.975, n-1} * sd / sqrt(n): half-width of the 95% Student-t interval of the mean
  over the n seeds with a value (sd with ddof = 1); it covers seed-to-seed variation
  (training, the generated samples, the evaluation draws). None below n = 2.
- se = sqrt(sum_i se_i^2) / n: the standard error of the same mean from the finite
  generated samples alone (each seed's bootstrap `<metric>_se`). None where a seed lacks it.
Values that are missing or not finite (a pruned repeat that never evaluated) are left out.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from search_spaces.config_groups import (  # noqa: F401 (re-exported)
    GROUP_HASH_CHARS, GROUP_TAG, LABEL_TAG, NOT_GROUPED, config_group)


def config_label(config: dict[str, Any], searched: Iterable[str]) -> str:
    """The group for people: kind, sigma, K and the other searched keys to 4 significant digits."""
    parts = [str(config.get("kind")), f"s={_short(config.get('noise_std'))}", f"K={config.get('num_mixtures')}"]
    parts += [f"{k}={_short(config.get(k))}" for k in searched if k not in ("kind", "noise_std", "num_mixtures")]
    return " ".join(parts)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def finite(values: Iterable[Any]) -> list[float]:
    """The values that are numbers and finite, as floats (None, "", NaN and inf left out)."""
    out = []
    for v in values:
        if isinstance(v, bool) or v is None or v == "":
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def t_quantile(n: int) -> float:
    """t_{0.975, n-1}: the two-sided 95% quantile of Student's t with n - 1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def seed_stats(values: Iterable[Any], ses: Optional[Iterable[Any]] = None) -> dict[str, Any]:
    """{"mean", "t95", "n", "se"} over one group's seeds (module docstring); `ses` pairs with `values`."""
    pairs = list(zip(values, ses)) if ses is not None else [(v, None) for v in values]
    kept = [(float(v), s) for v, s in pairs if finite([v])]
    n = len(kept)
    mean = sum(v for v, _ in kept) / n if n else None
    t95 = None
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v, _ in kept) / (n - 1))
        t95 = t_quantile(n) * sd / math.sqrt(n)
    known = finite(s for _, s in kept)
    se = math.sqrt(sum(s * s for s in known)) / n if n and ses is not None and len(known) == n else None
    return {"mean": mean, "t95": t95, "n": n, "se": se}
