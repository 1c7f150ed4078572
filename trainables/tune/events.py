"""The callback that hands Tune's trial events, as plain data, to the study's listener."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

from ray import tune

from search_spaces.metric_names import EXTRACTOR_TAGS
from trainables.tune.listener import ERRORED, TrialListener, ended_state
from trainables.tune.results import exception_line, reported_metrics


@dataclass
class Driver:
    """What the driver process attaches to a study's callbacks: never pickled with Tune's state."""
    listener: TrialListener
    progress: Any = None  # study_progress(status) receiver (trainables/tune/progress.py), or None
    total: int = 0        # Tune trials the study has in all


DRIVER: dict[str, Driver] = {}  # study name -> the driver's receivers, in the driver process


def attach_driver(study_name: str, listener: TrialListener, progress=None, total: int = 0) -> Driver:
    """Register the driver's listener (and study progress receiver) for the next fit of `study_name`."""
    DRIVER[study_name] = Driver(listener, progress, total)
    return DRIVER[study_name]


class TrialEvents(tune.Callback):
    """Hands Tune's trial events, as plain data, to a `TrialListener` (trainables/tune/listener.py:
    the events, their arguments and meaning).

    `searcher` is the study's outermost searcher (repeats.SeededRepeater; a study from before
    it: search.FixedTrialsFirst): is_fixed, optuna_trial and optuna_history of a trial id.

    The listener belongs to the driver process (it holds an MLflow client, a terminal) and is
    not pickled with Tune's state. The driver registers it under the study's name
    (`attach_driver`) before it fits a built or restored Tuner; Tune's public `setup` hook,
    called at the start of every fit, hands it to the callback, the one Tune restored from
    tuner.pkl included. (`attach` sets one directly, for tests.)
    """

    def __init__(self, searcher, study_name: Optional[str] = None):
        self.searcher, self.study_name = searcher, study_name
        self._listener: Optional[TrialListener] = None

    def attach(self, listener: TrialListener) -> None:
        self._listener = listener

    def setup(self, **info):
        driver = DRIVER.get(self.study_name) if self.study_name else None
        if driver is not None:
            self._listener = driver.listener

    @property
    def listener(self) -> TrialListener:
        if self._listener is None:
            raise RuntimeError("TrialEvents has no listener: attach_listener(tuner, listener) before fit")
        return self._listener

    def __getstate__(self) -> dict:  # tuner.pkl keeps the searcher, never the driver's listener
        return {**self.__dict__, "_listener": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.listener.trial_started(trial.trial_id, _trial_config(trial), self.searcher.is_fixed(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.listener.trial_result(trial.trial_id, reported_metrics(result))
        if isinstance(result.get("hardware"), str):
            self.listener.trial_hardware(trial.trial_id, result["hardware"])
        tags = {key: result[key] for key in EXTRACTOR_TAGS if isinstance(result.get(key), str)}
        if tags:
            self.listener.trial_tags(trial.trial_id, tags)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # Tune registers the checkpoint only after its callbacks return: a node lost meanwhile costs the
        # trial its work since the previous one. So only the grids are copied, not the models' weights.
        with tempfile.TemporaryDirectory(prefix="grids-") as directory:
            copy_grids(checkpoint, directory)
            self.listener.trial_checkpoint(trial.trial_id, directory)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.listener.trial_retrying(trial.trial_id, trial.run_metadata.num_failures)

    def on_trial_complete(self, iteration, trials, trial, **info):
        metrics = reported_metrics(trial.last_result)
        self._ended(trial, ended_state(int(metrics.get("epoch", 0)), trial.config["max_epochs"]), None, metrics)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, ERRORED, _error_line(trial), reported_metrics(trial.last_result))

    def on_experiment_end(self, trials, **info):
        self.listener.study_ended(self.searcher.optuna_history())

    def _ended(self, trial, state: str, error: Optional[str], metrics: dict) -> None:
        optuna = self.searcher.optuna_trial(trial.trial_id)
        self.listener.trial_ended(trial.trial_id, state, error, optuna, metrics)
        self.listener.optuna_history(self.searcher.optuna_history())


def copy_grids(checkpoint, directory: str) -> None:
    """The checkpoint's sample grids (its top-level *.png files) into `directory`, through the checkpoint's
    own filesystem (a local path or object storage)."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(checkpoint.path)
    for entry in checkpoint.filesystem.get_file_info(selector):
        if entry.type == pyarrow.fs.FileType.File and entry.base_name.endswith(".png"):
            pyarrow.fs.copy_files(entry.path, os.path.join(directory, entry.base_name),
                                  source_filesystem=checkpoint.filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())


def _trial_config(trial) -> dict:
    return {k: v for k, v in trial.config.items()}


def _error_line(trial) -> str:
    """The exception line ("DivergenceError: ...") out of Ray's error file."""
    path = trial.error_file
    if not path or not os.path.exists(path):
        return "trial failed (no error file)"
    return exception_line(open(path).read())
