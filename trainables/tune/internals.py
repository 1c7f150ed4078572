"""Every private attribute of Ray Tune this project still uses, in one place, with why.

The ordinary path of a study (build, fit, report, save) uses public APIs only: our own Optuna
ask/tell Searcher (search.py), ASHA's own save/restore (scheduler.py), Tune's callback `setup`
hook for the driver's listener (events.py), and ray.init's `address_info` for the local Ray's
session (tuner.py). Two paths off it remain private, because Ray offers no public route:

- extending a finished study (extend.py): a restored Tuner keeps the num_samples of its first run
  and Ray has no API to raise it (ray-project/ray#42221, open); the restored TuneConfig is
  reachable only as `Tuner._local_tuner._tune_config`, the total only as
  `SearchGenerator._total_samples` / `_finished`.
- repairing a killed study's checkpoint bookkeeping before a resume (checkpoint_repair.py): Tune
  saves each trial's kept checkpoints in `_TrainingRunMetadata` / `_CheckpointManager`, and a kill
  between pruning a checkpoint and saving that list leaves it pointing at a deleted directory;
  Tune's restore has no public hook to correct it.

`check_internals()` (run by tests/trainables/test_tune_internals.py) fails loudly, naming the
installed versions, when an upgrade moves them; tests/trainables/test_private_apis.py lists every
private attribute the product's code reaches. The versions they were checked with: TESTED_WITH.
"""
from __future__ import annotations

import tempfile
from typing import Any

# The newest version of each tested; pyproject.toml caps each below its next minor release. optuna 5.1.0
# ran the searcher, repeats and tuner tests and a smoke study (docs/development.md); CI installs
# tools/constraints.txt's pins. mlflow 3.18.0 is on the index but not installable here (its
# mlflow-tracing 3.18.0 is missing), so mlflow stays below 3.18.
TESTED_WITH = {"ray": "2.60.0", "optuna": "5.1.0", "mlflow": "3.17.2"}


class InternalsChanged(RuntimeError):
    """A private attribute this project relies on is gone or changed its type."""


# ------------------------------------------------------------------ Ray's Tuner and SearchGenerator

def local_tuner(tuner):
    """The driver-side Tuner (`Tuner._local_tuner`); None under Ray Client (ray://), where the
    Tuner runs remotely."""
    return getattr(tuner, "_local_tuner", None)


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


# ------------------------------------------------------------------ the check

def installed_versions() -> dict[str, str]:
    import mlflow
    import optuna
    import ray

    return {"ray": ray.__version__, "optuna": optuna.__version__, "mlflow": mlflow.__version__}


def check_internals() -> None:
    """Exercise every accessor above on real Ray objects; raise InternalsChanged naming the
    installed and the tested versions if one no longer fits."""
    try:
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
    """Exercise local_tuner/tuner_tune_config on a real (unfitted) Tuner."""
    from ray import tune

    callback = tune.Callback()
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(name="internals", storage_path=tmp_dir, callbacks=[callback]))
    _expect(local_tuner(tuner) is not None, "Tuner._local_tuner exists in the driver")
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
