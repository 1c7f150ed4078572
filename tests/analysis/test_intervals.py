"""The interval across seeds against scipy.stats.t.interval and against t quantiles worked by hand; the
bootstrap SE of a mean; what one seed and a NaN (a repeat that never evaluated) do."""
import math

import numpy as np
import pytest
from scipy import stats

from analysis.intervals import mean_se, seed_interval, t95, t_quantile


@pytest.mark.parametrize("values", [[662.0, 785.0], [10.0, 12.0, 14.0], [3.1, 2.7, 3.4, 2.9, 3.0],
                                    list(np.random.default_rng(0).normal(5.0, 2.0, 12))])
def test_interval_is_scipys_t_interval_of_the_mean(values):
    kept = np.asarray(values)
    low, high = stats.t.interval(0.95, len(kept) - 1, loc=kept.mean(), scale=stats.sem(kept))
    interval = seed_interval(values)
    assert interval.n == len(values) and interval.mean == pytest.approx(kept.mean())
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


def test_hand_worked_examples():
    # Two seeds of one configuration at sigma 0.48 (issue 21): 662 and 785. mean 723.5, sd = 123 / sqrt(2),
    # so sd / sqrt(2) = 61.5; t(0.975, 1) = tan(pi (0.975 - 1/2)) = tan(0.475 pi) = 12.7062 (Cauchy).
    t1 = math.tan(0.475 * math.pi)
    assert t_quantile(2) == pytest.approx(t1) and t1 == pytest.approx(12.7062, abs=1e-4)
    two = seed_interval([662.0, 785.0])
    assert (two.mean, two.half_width) == (723.5, pytest.approx(t1 * 61.5))   # ± 781.4: two seeds say little
    # Three seeds 10, 12, 14: mean 12, sd 2; t(0.975, 2) = (2p - 1) / sqrt(2 p (1 - p)) at p = 0.975 = 4.3027.
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert t_quantile(3) == pytest.approx(t2) and t2 == pytest.approx(4.3027, abs=1e-4)
    assert t95([10.0, 12.0, 14.0]) == pytest.approx(t2 * 2 / math.sqrt(3))     # = 4.968


def test_one_seed_has_no_interval_and_nan_is_left_out():
    one = seed_interval([5.0])
    assert (one.mean, one.n) == (5.0, 1) and math.isnan(one.half_width)
    none = seed_interval([float("nan"), None])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.half_width)
    pruned = seed_interval([10.0, float("nan"), 14.0, None])   # a repeat that never evaluated
    assert pruned.n == 2 and pruned == seed_interval([10.0, 14.0])
    assert math.isnan(t_quantile(1))


def test_bootstrap_se_of_the_mean():
    # sqrt(1.0^2 + 1.4^2) / 2 over the two seeds with a value; the NaN seed's SE does not count
    assert mean_se([10.0, 14.0, float("nan")], [1.0, 1.4, 9.0]) == pytest.approx(math.sqrt(2.96) / 2)
    assert math.isnan(mean_se([10.0, 14.0], [1.0, None])), "a seed with a value but no SE: unknown"
    assert math.isnan(mean_se([float("nan")], [1.0]))
    assert mean_se([16.0], [1.6]) == pytest.approx(1.6), "one seed: its own SE"
