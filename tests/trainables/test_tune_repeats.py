"""SeededRepeater: each configuration as R Tune trials with seeds S..S+R-1, Optuna (an RDB storage, read back
with optuna.load_study) told once per configuration: the mean of completed repeats, PRUNED with the mean at
the last epoch all repeats reached, FAIL for an errored repeat; a state saved mid-group continues."""
import pickle

import optuna
import pytest

from trainables.tune.repeats import SeededRepeater
from trainables.tune.search import FixedTrialsFirst, OptunaSearcher, _NothingToSearch

METRIC, MAX_EPOCHS, SEED = "fd", 4, 7
BASELINE = {"kind": "baseline", "noise_std": 0.0}


def _searcher(tmp_path, repeats: int = 2, name: str = "s") -> SeededRepeater:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = OptunaSearcher(space={"noise_std": optuna.distributions.FloatDistribution(0.1, 0.8)},
                                   metric=METRIC, mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                                   storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db"),
                                   study_name=name)
    return SeededRepeater(FixedTrialsFirst([BASELINE], inner), repeats, SEED)


def _result(value, epoch: int) -> dict:
    return {METRIC: value, "epoch": epoch, "config/max_epochs": MAX_EPOCHS}


def _stored(tmp_path, name: str = "s") -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")
    return [(t.number, t.state.name, t.value, dict(t.intermediate_values)) for t in study.trials]


def test_each_configuration_runs_with_successive_seeds(tmp_path):
    s = _searcher(tmp_path, repeats=3)
    configs = {t: s.suggest(t) for t in "abcdef"}
    assert [configs[t] for t in "abc"] == [{**BASELINE, "seed": 7}, {**BASELINE, "seed": 8}, {**BASELINE, "seed": 9}]
    assert [configs[t]["seed"] for t in "def"] == [7, 8, 9]
    assert len({configs[t]["noise_std"] for t in "def"}) == 1, "one Optuna proposal, three seeds"
    assert [s.is_fixed(t) for t in "abcdef"] == [True] * 3 + [False] * 3, "every repeat of the baseline is fixed"
    assert s.members("d") == ["d", "e", "f"] and s.primary("f") == "d"
    assert len(_stored(tmp_path)) == 1, "Optuna holds one trial per configuration"


def test_optuna_is_told_the_mean_once_all_seeds_completed(tmp_path):
    s = _searcher(tmp_path)
    for t in "abcd":
        s.suggest(t)
    s.on_trial_result("c", _result(10.0, 2))
    s.on_trial_result("d", _result(20.0, 2))   # both at epoch 2: the mean 15 is reported
    s.on_trial_complete("c", _result(8.0, 4))
    assert s.optuna_trial("c")["state"] == "RUNNING", "one seed ended: Optuna waits for the other"
    s.on_trial_complete("d", _result(12.0, 4))
    assert _stored(tmp_path) == [(0, "COMPLETE", 10.0, {2: 15.0, 4: 10.0})]
    assert s.optuna_trial("d") == s.optuna_trial("c") and s.optuna_trial("c")["values"] == [10.0]
    s.on_trial_complete("d", _result(99.0, 4))  # Tune repeating a completion after a resume changes nothing
    s.on_trial_complete("a", _result(1.0, 4))
    s.on_trial_complete("b", _result(2.0, 4))
    assert _stored(tmp_path) == [(0, "COMPLETE", 10.0, {2: 15.0, 4: 10.0})], "the baseline never reaches Optuna"


def test_a_pruned_seed_prunes_its_configuration_at_the_mean_all_seeds_reached(tmp_path):
    """ASHA stops Tune trials one by one; the mean of the seeds it kept would favour the good ones."""
    s = _searcher(tmp_path)
    for t in "abcd":
        s.suggest(t)
    s.on_trial_result("c", _result(10.0, 2))
    s.on_trial_complete("d", _result(30.0, 2))   # stopped at its first rung: its last result reaches us here
    s.on_trial_complete("c", _result(7.0, 4))    # the other seed completed
    assert _stored(tmp_path) == [(0, "PRUNED", 20.0, {2: 20.0})]


def test_an_errored_seed_fails_its_configuration(tmp_path):
    s = _searcher(tmp_path)
    for t in "abcd":
        s.suggest(t)
    s.on_trial_complete("c", _result(8.0, 4))
    s.on_trial_complete("d", None, error=True)
    assert [t[:3] for t in _stored(tmp_path)] == [(0, "FAIL", None)]


def test_a_state_saved_mid_group_continues(tmp_path):
    """Tune saves the searcher with get_state (wrappers) and save (the base searcher); a restore continues
    the open group with new trial ids and tells Optuna once."""
    s = _searcher(tmp_path)
    for t in "abc":
        s.suggest(t)
    s.on_trial_complete("c", _result(8.0, 4))
    states = pickle.loads(pickle.dumps([s.get_state(), s.searcher.get_state()]))  # the wrappers, as Tune does
    s.searcher.searcher.save(str(tmp_path / "ckpt.pkl"))                           # the base searcher

    again = _searcher(tmp_path)
    again.set_state(states[0])
    again.searcher.set_state(states[1])
    again.searcher.searcher.restore(str(tmp_path / "ckpt.pkl"))
    config = again.suggest("x")                  # Tune forgot nothing: the group of c gets its second seed
    assert config["seed"] == SEED + 1 and config["noise_std"] == again.searcher.searcher.optuna_history()[0][
        "params"]["noise_std"] and again.primary("x") == "c"
    again.on_trial_complete("x", _result(12.0, 4))
    assert [t[:3] for t in _stored(tmp_path)] == [(0, "COMPLETE", 10.0)]
    assert "kind" not in again.suggest("y") and again.primary("y") == "y", "a new Optuna configuration next"
    assert [t[:2] for t in _stored(tmp_path)] == [(0, "COMPLETE"), (1, "RUNNING")]


def test_one_repeat_passes_every_event_through(tmp_path):
    """--repeats 1 (the default): configs without an added seed, Optuna told each trial's own values."""
    s = _searcher(tmp_path, repeats=1)
    assert s.suggest("a") == BASELINE and "seed" not in s.suggest("b")
    s.on_trial_result("b", _result(9.0, 2))
    s.on_trial_complete("b", _result(5.0, 4))
    assert _stored(tmp_path) == [(0, "COMPLETE", 5.0, {2: 9.0})]


def test_a_space_without_search_repeats_its_fixed_trials(tmp_path):
    s = SeededRepeater(FixedTrialsFirst([{"kind": "smoothed"}, BASELINE], _NothingToSearch()), 2, 3)
    configs = [s.suggest(t) for t in "abcde"]
    assert configs[:4] == [{"kind": "smoothed", "seed": 3}, {"kind": "smoothed", "seed": 4},
                           {**BASELINE, "seed": 3}, {**BASELINE, "seed": 4}]
    assert configs[4] == s.FINISHED
    for t in "abcd":
        s.on_trial_complete(t, _result(1.0, 4))
    assert s.optuna_history() == [] and s.optuna_trial("a") is None


@pytest.mark.parametrize("repeats", [2, 3])
def test_the_mean_told_is_over_all_seeds(tmp_path, repeats):
    s = _searcher(tmp_path, repeats=repeats)
    ids = [f"t{i}" for i in range(2 * repeats)]
    for t in ids:
        s.suggest(t)
    values = [4.0, 6.0, 11.0][:repeats]
    for t, v in zip(ids[repeats:], values):
        s.on_trial_complete(t, _result(v, 4))
    assert _stored(tmp_path)[0][1:3] == ("COMPLETE", pytest.approx(sum(values) / repeats))
