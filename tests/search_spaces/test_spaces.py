import dataclasses

import pytest

from search_spaces import OBJECTIVE_MODES, SPACES, Choice, Float, Int, SearchSpace
from trainables.config import DATASETS, TrialConfig

FLAT_KEYS = set(TrialConfig().to_flat())


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_key_is_a_trial_config_key(name):
    space = SPACES[name]
    keys = set(space.params) | set(space.fixed)
    for values in space.fixed_per_dataset.values():
        keys |= set(values)
    for trial in space.fixed_trials:
        keys |= set(trial)
    assert keys <= FLAT_KEYS, sorted(keys - FLAT_KEYS)
    assert set(space.fixed_per_dataset) <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_declares_objective_and_mode(name):
    space = SPACES[name]
    assert space.name == name
    assert space.objective and len(space.objective) == len(space.mode)
    assert all(OBJECTIVE_MODES[o] == m for o, m in zip(space.objective, space.mode))


@pytest.mark.parametrize("name", sorted(SPACES))
def test_domains_are_well_formed(name):
    for key, domain in SPACES[name].params.items():
        if isinstance(domain, (Float, Int)):
            assert domain.low < domain.high, key
            assert not domain.log or domain.low > 0, key
        else:
            assert isinstance(domain, Choice) and len(domain.values) >= 2


def test_noise_sweep_holds_the_paper_sigmas_and_a_fixed_baseline():
    space = SPACES["noise_sweep"]
    sigma = space.params["noise_std"]
    assert sigma.low <= 0.3 <= sigma.high and sigma.low <= 0.5 <= sigma.high
    assert sigma.low > 0, "sigma = 0 is the baseline trial, not a point of the Optuna search"
    assert space.fixed["kind"] == "smoothed"
    assert {"kind": "baseline", "noise_std": 0.0} in space.fixed_trials


def test_mixture_sweep_and_joint():
    mix = SPACES["mixture_sweep"]
    assert (mix.params["num_mixtures"].low, mix.params["num_mixtures"].high) == (1, 20)
    assert mix.fixed["noise_std"] > 0
    assert {"noise_std", "num_mixtures", "lr"} == set(SPACES["joint"].params)
    assert SPACES["joint"].params["lr"].log


def test_paper_settings_per_dataset():
    paper = SPACES["paper"]
    assert not paper.searched
    cifar, mnist = paper.fixed_per_dataset["cifar10"], paper.fixed_per_dataset["mnist"]
    assert (cifar["noise_std"], cifar["num_mixtures"], cifar["nr_filters"], cifar["nr_resnet"]) == (0.3, 10, 160, 5)
    assert (mnist["noise_std"], mnist["num_mixtures"], mnist["nr_filters"], mnist["nr_resnet"]) == (0.5, 10, 40, 5)
    for dataset, fixed in paper.fixed_per_dataset.items():  # the authors' configs and gated_resnet, every dataset
        assert (fixed["dropout"], fixed["batch_size"], fixed["denoiser_batch_size"], fixed["lr"]) == (0.5, 80, 50, 2e-4)
        assert (fixed["denoiser_likelihood"], fixed["gradient_mode"]) == ("continuous", "fixed_output"), dataset
    kinds = sorted(t.get("kind") for t in paper.fixed_trials)
    assert kinds == ["baseline", "smoothed"]


def test_space_rejects_inconsistent_declarations():
    base = SPACES["noise_sweep"]
    with pytest.raises(ValueError, match="mode"):
        dataclasses.replace(base, objective=("distance",), mode=("max",))
    with pytest.raises(ValueError, match="both searched and fixed"):
        dataclasses.replace(base, fixed={"noise_std": 0.3})
    with pytest.raises(ValueError, match="nothing to run"):
        SearchSpace(name="empty", description="", params={}, fixed={})
