"""A restored searcher lined up with the trials Tune restored (trainables/tune/reconcile_search.py):
Tune's experiment state and the searcher's files are saved and uploaded side by side, so a killed
driver can leave them from different moments. Each case saves the searcher at one moment, goes on,
and restores it beside Tune's trials of a later (or earlier) moment."""
import optuna
import pytest
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from trainables.tune.extend import ExtendedSearch
from trainables.tune.reconcile_search import generator_state
from trainables.tune.repeats import SeededRepeater
from trainables.tune.search import FixedTrialsFirst, OptunaSearcher

METRIC, MAX_EPOCHS = "fd", 4
SPACE = {"noise_std": optuna.distributions.FloatDistribution(0.1, 0.8)}
FIXED = [{"kind": "baseline", "noise_std": 0.0}]


def _optuna(storage) -> OptunaSearcher:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearcher(space=SPACE, metric=METRIC, mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                          storage=storage, study_name="s")


def _result(value: float, epoch: int) -> dict:
    return {METRIC: value, "epoch": epoch, "config/max_epochs": MAX_EPOCHS}


def _tune(status: str, config: dict | None = None, last_result: dict | None = None) -> dict:
    return {"status": status, "config": config or {}, "last_result": last_result or {}}


def _states(searcher: OptunaSearcher) -> list[tuple]:
    return [(t.number, t.state.name, t.value, dict(t.intermediate_values), t.user_attrs.get("tune_trial_id"))
            for t in searcher.study.get_trials()]


@pytest.mark.parametrize("storage", ["rdb", "memory"])
def test_a_trial_tune_kept_and_the_checkpoint_lacks_is_adopted(tmp_path, storage):
    """The CI failure of 94647ac: Tune restored trial b, the searcher's checkpoint predates b. b's
    Optuna trial must be the one b completes, not FAIL beside a COMPLETE Tune trial."""
    url = f"sqlite:///{tmp_path}/optuna.db" if storage == "rdb" else None
    first = _optuna(url)
    first.suggest("a")
    first.save(str(tmp_path / "ckpt.pkl"))
    b_params = first.suggest("b")
    first.on_trial_result("b", _result(6.0, 2))

    again = _optuna(url) if storage == "rdb" else _optuna(None)
    again.restore(str(tmp_path / "ckpt.pkl"))
    again.reconcile({"a": _tune("RUNNING"), "b": _tune("RUNNING", {**b_params, "seed": 1})})
    for trial_id, value in (("a", 9.0), ("b", 5.0)):
        again.on_trial_result(trial_id, _result(value, MAX_EPOCHS))
        again.on_trial_complete(trial_id, _result(value, MAX_EPOCHS))

    trials = _states(again)
    assert [t[1] for t in trials] == ["COMPLETE", "COMPLETE"], trials
    b = [t for t in trials if t[4] == "b"]
    assert len(b) == 1 and b[0][2] == 5.0
    assert again.optuna_trial("b")["params"] == b_params
    if storage == "rdb":  # the storage kept b's Optuna trial and its first report: the same trial goes on
        assert b[0][0] == 1 and b[0][3] == {2: 6.0, 4: 5.0}
    else:  # the pickled in-memory study never saw b: asked again with b's params
        assert b[0][3] == {4: 5.0}


def test_a_proposal_tune_lacks_ends_fail_and_an_ended_trial_is_told(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    first = _optuna(url)
    first.suggest("a")
    first.suggest("b")
    first.save(str(tmp_path / "ckpt.pkl"))  # knows a and b; Tune's state (older) has only a, ended

    again = _optuna(url)
    again.restore(str(tmp_path / "ckpt.pkl"))
    again.reconcile({"a": _tune("TERMINATED", last_result=_result(3.0, MAX_EPOCHS))})
    assert [(t[1], t[2], t[4]) for t in _states(again)] == [("COMPLETE", 3.0, "a"), ("FAIL", None, "b")]
    again.on_trial_complete("a", _result(3.0, MAX_EPOCHS))  # nothing twice, no error
    assert len(again.study.get_trials()) == 2


def test_fixed_trials_follow_tune():
    inner = _optuna(None)
    fixed = FixedTrialsFirst(FIXED, inner)
    fixed.suggest("t0")
    seen = fixed.reconcile({"t1": _tune("RUNNING", {"noise_std": 0.3})})  # Tune lacks t0
    assert fixed.fixed_ids == {} and seen == {"t1": _tune("RUNNING", {"noise_std": 0.3})}
    assert fixed.suggest("t2") == FIXED[0], "the fixed trial Tune lacks is proposed again"

    late = FixedTrialsFirst(FIXED, _optuna(None))  # a checkpoint from before the baseline was proposed
    seen = late.reconcile({"t0": _tune("RUNNING", dict(FIXED[0])), "t1": _tune("RUNNING", {"noise_std": 0.3})})
    assert late.fixed_ids == {"t0": 0} and list(seen) == ["t1"]
    assert late.suggest("t2") != FIXED[0]


def _chain(storage) -> tuple[SearchGenerator, OptunaSearcher]:
    inner = _optuna(storage)
    return ConcurrencyLimiter(SeededRepeater(FixedTrialsFirst(FIXED, inner), 1, 0), max_concurrent=2), inner


def test_files_of_two_moments_line_up_through_tunes_restore(tmp_path):
    """Tune's own save_to_dir/restore_from_dir: the wrappers' file from moment 2 (3 trials, counter 3),
    the base searcher's file from moment 1 (2 trials), and Tune's trials of moment 2."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    limiter, _ = _chain(url)
    generator = SearchGenerator(limiter)
    moment1, moment2 = tmp_path / "m1", tmp_path / "m2"
    moment1.mkdir(), moment2.mkdir()
    configs = {t: limiter.suggest(t) for t in ("t0", "t1")}
    generator.set_state({**generator.get_state(), "counter": 2})
    generator.save_to_dir(str(moment1), session_str="s")
    configs["t2"] = limiter.suggest("t2")  # refused: 2 live trials already
    limiter.on_trial_complete("t0", {"epoch": MAX_EPOCHS, "config/max_epochs": MAX_EPOCHS})
    configs["t2"] = limiter.suggest("t2")
    generator.set_state({**generator.get_state(), "counter": 3})
    generator.save_to_dir(str(moment2), session_str="s")
    (moment2 / "searcher-state-s.pkl").write_bytes((moment1 / "searcher-state-s.pkl").read_bytes())

    trials = {"t0": _tune("TERMINATED", configs["t0"]), "t1": _tune("RUNNING", configs["t1"]),
              "t2": _tune("PENDING", configs["t2"])}
    restored, inner = _chain(url)
    resumed = ExtendedSearch(restored, total=3, trials=trials)
    resumed.restore_from_dir(str(moment2))
    assert resumed.get_state()["counter"] == 3  # the base file's moment had 2
    assert restored.get_state()["live_trials"] == {"t1", "t2"}
    for trial_id in ("t1", "t2"):
        restored.on_trial_complete(trial_id, _result(4.0, MAX_EPOCHS))
    assert [(t[1], t[4]) for t in _states(inner)] == [("COMPLETE", "t1"), ("COMPLETE", "t2")]


def test_generator_counter_is_tunes_trial_count():
    state = {"counter": 5, "total_samples": 6, "finished": False, "experiment": None}
    assert generator_state(state, {"a": {}, "b": {}})["counter"] == 2


@pytest.mark.slow  # a local Ray and a Tune run: ~20 s
def test_restored_trials_reads_tunes_newest_state_and_none_before_the_first(tmp_path):
    import ray
    from ray import tune

    from trainables.tune.reconcile_search import restored_trials

    assert restored_trials(str(tmp_path)) is None  # nothing saved yet: Tune starts afresh

    def trainable(config):
        tune.report({"value": config["x"] * 2})

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    try:
        tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2])},
                   run_config=tune.RunConfig(name="e", storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()
    trials = restored_trials(str(tmp_path / "e"))
    assert sorted((t["config"]["x"], t["status"], t["last_result"]["value"]) for t in trials.values()) == [
        (1, "TERMINATED", 2), (2, "TERMINATED", 4)]


def test_no_searcher_state_at_all_still_lines_up_before_the_first_new_trial(tmp_path):
    """Tune restored trials but found no searcher file (a driver killed before its first upload): the
    fresh searchers learn Tune's trials at the first question, so the baseline is not proposed twice."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    limiter, inner = _chain(url)
    asked = limiter.suggest("t0"), limiter.suggest("t1")
    trials = {"t0": _tune("RUNNING", asked[0]), "t1": _tune("RUNNING", asked[1])}
    fresh, fresh_inner = _chain(url)
    resumed = ExtendedSearch(fresh, total=3, trials=trials)
    assert not resumed.is_finished() and resumed.get_state()["counter"] == 2
    fixed = fresh.searcher.searcher
    assert fixed.fixed_ids == {"t0": 0} and "t1" in fresh_inner.trials
    assert fresh.get_state()["live_trials"] == {"t0", "t1"}
    assert fixed.suggest("t2") != FIXED[0]
    assert [t[4] for t in _states(fresh_inner)] == ["t1", "t2"]
