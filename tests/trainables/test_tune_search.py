"""OptunaSearcher with an Optuna RDB storage: a restore from Tune's (older) searcher checkpoint
agrees with the database that kept going after it."""
import optuna

from trainables.tune.search import OptunaSearcher

METRIC, MAX_EPOCHS = "fd", 4


def _searcher(storage: str) -> OptunaSearcher:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearcher(space={"noise_std": optuna.distributions.FloatDistribution(0.1, 0.8)},
                                  metric=METRIC, mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                                  storage=optuna.storages.RDBStorage(storage), study_name="s")


def _result(value: float, epoch: int) -> dict:
    return {METRIC: value, "epoch": epoch, "config/max_epochs": MAX_EPOCHS}


def _tune(status: str, config: dict | None = None, last_result: dict | None = None) -> dict:
    """A trial Tune restored, as reconcile_search.restored_trials gives it."""
    return {"status": status, "config": config or {}, "last_result": last_result or {}}


def test_restore_reconciles_with_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = _searcher(storage)
    first.suggest("a")
    first.on_trial_result("a", _result(9.0, 2))
    first.save(str(tmp_path / "ckpt.pkl"))            # Tune's checkpoint: knows trial a, running
    first.suggest("b")                                 # asked after it: Tune forgets b on restore
    first.on_trial_result("a", _result(7.0, 4))
    first.on_trial_complete("a", _result(7.0, 4))      # the storage finished a after the checkpoint

    again = _searcher(storage)
    again.restore(str(tmp_path / "ckpt.pkl"))
    again.reconcile({"a": _tune("RUNNING")})           # Tune's restored trials: a only
    # Tune re-runs a from its last checkpoint: repeated results and completion change nothing, raise nothing
    again.on_trial_result("a", _result(8.0, 4))
    again.on_trial_complete("a", _result(8.0, 4))
    again.suggest("c")
    again.on_trial_complete("c", _result(5.0, 2))      # stopped early: PRUNED

    study = optuna.load_study(study_name="s", storage=storage)
    trials = [(t.number, t.state.name, t.value, dict(t.intermediate_values)) for t in study.trials]
    assert trials == [(0, "COMPLETE", 7.0, {2: 9.0, 4: 7.0}), (1, "FAIL", None, {}), (2, "PRUNED", None, {})]
    history = again.optuna_history()
    assert [(t["number"], t["state"]) for t in history] == [(0, "COMPLETE"), (1, "FAIL"), (2, "PRUNED")]

