"""Every use of a private attribute of Ray Tune or Optuna, in one place.

Ray's OptunaSearch keeps its Optuna study and trials in private attributes, ASHA keeps its
rungs in private ones, and neither offers a public way to mark a trial PRUNED or to save
rungs with the experiment; a Tuner offers no public access to its callbacks (to attach the
driver's listener after a restore) or to the restored trial total (to extend a study); a saved trial's checkpoint bookkeeping is
private too (checkpoint_repair.py fixes one that a kill left pointing at a pruned checkpoint). These accessors are the only code that touches them;
`check_internals()` (run by tests/trainables/test_tune_internals.py) fails loudly, naming
the installed versions, when an upgrade moves them. The versions they were written
against are the upper bounds in pyproject.toml.
"""
from __future__ import annotations

import tempfile
from typing import Any

TESTED_WITH = {"ray": "2.60.0", "optuna": "5.0.0"}  # = the upper bounds in pyproject.toml


class InternalsChanged(RuntimeError):
    """A private attribute this project relies on is gone or changed its type."""


# ------------------------------------------------------------------ Ray's OptunaSearch

def optuna_trials(search) -> dict:
    """Tune trial id -> live optuna.Trial of an OptunaSearch (`_ot_trials`)."""
    return search._ot_trials


def optuna_study(search):
    """The optuna.Study behind an OptunaSearch (`_ot_study`)."""
    return search._ot_study


def told_trials(search) -> set:
    """Tune trial ids already told to Optuna (`_completed_trials`)."""
    return search._completed_trials


# ------------------------------------------------------------------ Ray's ASHA

def asha_state(scheduler) -> dict[str, Any]:
    """ASHA's whole state (rungs, trial -> bracket, counters), as its own save() pickles it."""
    return dict(scheduler.__dict__)


def set_asha_state(scheduler, state: dict[str, Any]) -> None:
    scheduler.__dict__.update(state)


def asha_forget(scheduler, trial_id: str) -> None:
    """Drop a trial from ASHA's trial -> bracket map (`_trial_info`) without recording it."""
    scheduler._trial_info.pop(trial_id, None)


def asha_rungs(scheduler) -> list[tuple[int, dict[str, float]]]:
    """(milestone, {trial id: signed objective}) of every rung of every bracket (`_brackets`, `_rungs`)."""
    return [(milestone, dict(recorded)) for bracket in scheduler._brackets for milestone, recorded in bracket._rungs]


# ------------------------------------------------------------------ Ray's Tuner and SearchGenerator

def local_tuner(tuner):
    """The driver-side Tuner (`Tuner._local_tuner`); None under Ray Client (ray://), where the
    Tuner runs remotely."""
    return getattr(tuner, "_local_tuner", None)


def tuner_run_callbacks(tuner) -> list:
    """The callbacks of a built or restored Tuner's RunConfig (`_local_tuner.get_run_config()`)."""
    return list(local_tuner(tuner).get_run_config().callbacks or [])


def tuner_tune_config(tuner):
    """The (restored) TuneConfig of a Tuner, mutable in place (`_local_tuner._tune_config`)."""
    return local_tuner(tuner)._tune_config


def search_total(generator) -> int:
    """How many trials a SearchGenerator creates in all (`_total_samples`)."""
    return generator._total_samples


def raise_search_total(generator, total: int) -> None:
    """Let a SearchGenerator create trials until `total` (`_total_samples`; `_finished` cleared so a
    searcher that said FINISHED at the old total is asked again)."""
    generator._total_samples = total
    generator._finished = False


# ------------------------------------------------------------------ Tune's saved trial checkpoints

def newest_experiment_state(fs, root: str):
    """Path of the experiment_state-*.json Tune restores from (the greatest name), or None."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    return _find_newest_experiment_checkpoint(root, fs=fs)


def experiment_trial_data(state: dict) -> list:
    """[trial json, run-metadata json] per trial of a loaded experiment_state-*.json (`trial_data`)."""
    return state["trial_data"]


def decode_run_metadata(run_metadata_json: str):
    """A trial's `_TrainingRunMetadata` (it unpickles with cloudpickle, as Tune's restore does)."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    return _TrainingRunMetadata.from_json_state(run_metadata_json)


def encode_run_metadata(run_metadata) -> str:
    run_metadata.invalidate_cache()
    return run_metadata.get_json_state()


def checkpoint_manager(run_metadata):
    """The trial's `_CheckpointManager` (`checkpoint_manager`), None before its first checkpoint."""
    return run_metadata.checkpoint_manager


def latest_checkpoint_result(manager):
    return manager.latest_checkpoint_result


def checkpoint_results(manager) -> list:
    """The kept checkpoints' results, worst first (`_checkpoint_results`)."""
    return list(manager._checkpoint_results)


def set_checkpoint_results(manager, results: list, latest) -> None:
    manager._checkpoint_results = list(results)
    manager._latest_checkpoint_result = latest


def training_result(path: str, fs, metrics: dict):
    """A `_TrainingResult` for the checkpoint directory at `path` on `fs`."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult(checkpoint=Checkpoint(path, filesystem=fs), metrics=dict(metrics))


def insert_by_score(manager, results: list, result) -> list:
    """`results` with `result` placed as the manager ranks it (by the score attribute when the
    result has it, else last, as Tune's register_checkpoint does)."""
    from ray.train._internal.checkpoint_manager import _insert_into_sorted_list

    results = list(results)
    attribute = manager.checkpoint_config.checkpoint_score_attribute
    if attribute is not None and attribute in result.metrics:
        _insert_into_sorted_list(results, result, key=manager._get_checkpoint_score)
    else:
        results.append(result)
    return results


# ------------------------------------------------------------------ Ray's local node

def local_ray_processes() -> dict:
    """{"session_dir", "raylet_pid", "pids"} of the Ray this driver started (`_global_node`),
    or {} when it joined a cluster: what to stop if the driver dies without shutting it down."""
    import ray

    try:
        node = ray._private.worker._global_node
        if node is None or not node.head or not getattr(node, "all_processes", None):
            return {}
        pids = {kind: [info.process.pid for info in infos] for kind, infos in node.all_processes.items()}
    except AttributeError:  # internals moved (tests/study/test_stale_cluster.py says so): no cleanup, no crash
        return {}
    return {"session_dir": node.get_session_dir_path(), "raylet_pid": (pids.get("raylet") or [None])[0],
            "pids": sorted(p for ps in pids.values() for p in ps)}


# ------------------------------------------------------------------ the check

def installed_versions() -> dict[str, str]:
    import optuna
    import ray

    return {"ray": ray.__version__, "optuna": optuna.__version__}


def check_internals() -> None:
    """Build a real OptunaSearch and ASHA and exercise every accessor above; raise
    InternalsChanged naming the installed and the tested versions if one no longer fits."""
    import optuna
    from optuna.distributions import FloatDistribution
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    try:
        search = OptunaSearch(space={"x": FloatDistribution(0.0, 1.0)}, metric="m", mode="min",
                              sampler=optuna.samplers.RandomSampler(seed=0))
        search.suggest("t0")
        _expect(isinstance(optuna_trials(search).get("t0"), optuna.Trial), "OptunaSearch._ot_trials[id] is an optuna.Trial")
        _expect(isinstance(optuna_study(search), optuna.Study), "OptunaSearch._ot_study is an optuna.Study")
        _expect(isinstance(told_trials(search), set), "OptunaSearch._completed_trials is a set")
        asha = ASHAScheduler(time_attr="epoch", metric="m", mode="min", max_t=8, grace_period=2, reduction_factor=2)
        rungs = asha_rungs(asha)
        _expect([m for m, _ in rungs] == [8, 4, 2], f"ASHA rungs at epochs [8, 4, 2], got {[m for m, _ in rungs]}")
        state = asha_state(asha)
        _expect({"_trial_info", "_brackets"} <= set(state), "ASHA keeps _trial_info and _brackets in __dict__")
        asha_forget(asha, "t0")
        _check_search_generator()
        with tempfile.TemporaryDirectory() as tmp_dir:
            _check_tuner(tmp_dir)
            _check_checkpoint_state(tmp_dir)
    except InternalsChanged:
        raise
    except Exception as err:  # AttributeError, TypeError, a changed constructor
        _expect(False, f"{type(err).__name__}: {err}")


def _check_search_generator() -> None:
    from ray.tune.search import SearchGenerator, Searcher

    class _Nothing(Searcher):
        def suggest(self, trial_id):
            return Searcher.FINISHED

    generator = SearchGenerator(_Nothing())
    generator.set_finished()
    _expect(isinstance(search_total(generator), int), "SearchGenerator._total_samples is an int")
    raise_search_total(generator, 5)
    _expect(search_total(generator) == 5 and not generator.is_finished(),
            "SearchGenerator._total_samples/_finished set the total and reopen it")


def _check_tuner(tmp_dir: str) -> None:
    """Exercise local_tuner/tuner_run_callbacks/tuner_tune_config on a real (unfitted) Tuner."""
    from ray import tune

    callback = tune.Callback()
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(name="internals", storage_path=tmp_dir, callbacks=[callback]))
    _expect(local_tuner(tuner) is not None, "Tuner._local_tuner exists in the driver")
    _expect(callback in tuner_run_callbacks(tuner), "Tuner._local_tuner.get_run_config().callbacks holds the callbacks")
    _expect(tuner_tune_config(tuner).num_samples == 1, "Tuner._local_tuner._tune_config is the TuneConfig")


def _check_checkpoint_state(tmp_dir: str) -> None:
    """Round-trip a trial's run metadata with a checkpoint manager through the accessors above."""
    import os

    import pyarrow.fs
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    fs = pyarrow.fs.LocalFileSystem()
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="m",
                                                  checkpoint_score_order="min"))
    for index, score in enumerate((3.0, 1.0)):
        os.makedirs(os.path.join(tmp_dir, f"checkpoint_{index:06d}"))
        manager.register_checkpoint(training_result(os.path.join(tmp_dir, f"checkpoint_{index:06d}"), fs, {"m": score}))
    run_metadata = _TrainingRunMetadata()
    run_metadata.checkpoint_manager = manager
    restored = checkpoint_manager(decode_run_metadata(encode_run_metadata(run_metadata)))
    _expect([r.metrics["m"] for r in checkpoint_results(restored)] == [3.0, 1.0],
            "_CheckpointManager._checkpoint_results lists the kept results worst first")
    _expect(latest_checkpoint_result(restored).metrics == {"m": 1.0}, "latest_checkpoint_result is the last registered")
    middle = insert_by_score(restored, checkpoint_results(restored), training_result(tmp_dir, fs, {"m": 2.0}))
    _expect([r.metrics["m"] for r in middle] == [3.0, 2.0, 1.0], "_insert_into_sorted_list ranks by _get_checkpoint_score")
    set_checkpoint_results(restored, middle[:1], latest=middle[0])
    _expect(restored.latest_checkpoint_result is middle[0] and restored.best_checkpoint_results == middle[:1],
            "_CheckpointManager._latest_checkpoint_result and _checkpoint_results are its state")
    _expect(newest_experiment_state(fs, tmp_dir) is None, "_find_newest_experiment_checkpoint(path, fs=) finds none")


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise InternalsChanged(f"private internals changed: {what} no longer holds with {installed_versions()} "
                               f"(written against {TESTED_WITH}); update trainables/tune/internals.py")
