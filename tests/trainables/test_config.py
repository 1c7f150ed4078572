"""Flat config <-> dataclasses: one name per idea, unknown keys refused, bad values named."""
import numpy as np
import pytest

from trainables.config import TrialConfig


def test_flat_round_trip_and_coercion_of_tune_values():
    cfg = TrialConfig()
    flat = cfg.to_flat()
    assert TrialConfig.from_flat(flat) == cfg
    assert {"noise_std", "num_mixtures", "lr", "kind", "dataset", "eval_every"} <= set(flat)
    coerced = TrialConfig.from_flat({"noise_std": np.float64(0.5), "num_mixtures": np.int64(7), "batch_size": "32"})
    assert coerced.data.noise_std == 0.5 and isinstance(coerced.data.noise_std, float)
    assert coerced.model.num_mixtures == 7 and isinstance(coerced.model.num_mixtures, int)
    assert coerced.train.batch_size == 32


def test_unknown_keys_are_refused_with_the_valid_ones_listed():
    with pytest.raises(ValueError, match=r"unknown config keys \['sigma'\]"):
        TrialConfig.from_flat({"sigma": 0.3})


@pytest.mark.parametrize("flat,message", [
    ({"noise_std": -0.1}, "noise_std must be >= 0"),
    ({"num_mixtures": 0}, "num_mixtures must be >= 1"),
    ({"kind": "smoothed", "noise_std": 0.0}, "needs noise_std > 0"),
    ({"kind": "baseline", "noise_std": 0.3}, "baseline trial has noise_std = 0"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"num_mixtures": 2.5}, "num_mixtures must be an integer"),
    ({"gradient_mode": "exact"}, "gradient_mode must be one of"),
])
def test_bad_values_give_one_clear_error(flat, message):
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_flat(flat)
