"""ASHA that exempts the fixed trials, and the callback that saves its rungs with the experiment."""
from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from trainables.tune.internals import asha_forget, asha_state, set_asha_state


class FixedTrialsExemptASHA(ASHAScheduler):
    """ASHA that never stops (or ranks) a space's fixed reference trials (every repeat of one: the
    study's outermost searcher, repeats.SeededRepeater, says which trials are fixed)."""

    def __init__(self, searcher, **kwargs):
        super().__init__(**kwargs)
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.searcher.is_fixed(trial.trial_id):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self.searcher.is_fixed(trial.trial_id):
            asha_forget(self, trial.trial_id)
            return
        super().on_trial_complete(tune_controller, trial, result)



class SchedulerState(tune.Callback):
    """Persists ASHA's rungs in Tune's experiment checkpoint: Tune saves searcher and callback
    state but not the scheduler's, so a resumed study would otherwise forget every rung."""

    def __init__(self, scheduler: FixedTrialsExemptASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {k: v for k, v in asha_state(self.scheduler).items() if k != "searcher"}

    def set_state(self, state: dict) -> None:
        set_asha_state(self.scheduler, state)
