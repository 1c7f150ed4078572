"""ASHA that exempts the fixed trials, and the callback that saves its rungs with the experiment."""
from __future__ import annotations

import os
import tempfile

from ray import tune
from ray.tune.schedulers import ASHAScheduler


class FixedTrialsExemptASHA(ASHAScheduler):
    """ASHA that never stops (or ranks) a space's fixed reference trials (every repeat of one: the
    study's outermost searcher, repeats.SeededRepeater, says which trials are fixed).

    A fixed trial is never added to ASHA (`on_trial_add`), so none of its results or its end
    reach a rung. `save`/`restore` are ASHA's own, without the searcher (it is saved with
    Tune's searcher checkpoint, and must stay the live one after a restore)."""

    def __init__(self, searcher, **kwargs):
        super().__init__(**kwargs)
        self.searcher = searcher

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self.searcher.is_fixed(trial.trial_id):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.searcher.is_fixed(trial.trial_id):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not self.searcher.is_fixed(trial.trial_id):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not self.searcher.is_fixed(trial.trial_id):
            super().on_trial_remove(tune_controller, trial)

    def save(self, checkpoint_path: str) -> None:
        searcher = self.searcher
        del self.searcher
        try:
            super().save(checkpoint_path)
        finally:
            self.searcher = searcher

    def restore(self, checkpoint_path: str) -> None:
        searcher = self.searcher
        super().restore(checkpoint_path)
        self.searcher = searcher


class SchedulerState(tune.Callback):
    """Persists ASHA's rungs in Tune's experiment checkpoint: Tune saves searcher and callback
    state but not the scheduler's, so a resumed study would otherwise forget every rung. The
    state is what ASHA's public save() writes (bytes)."""

    def __init__(self, scheduler: FixedTrialsExemptASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as f:
                return {"saved": f.read()}

    def set_state(self, state: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scheduler.pkl")
            with open(path, "wb") as f:
                f.write(state["saved"])
            self.scheduler.restore(path)

