"""The trial events a study listens to: one typed base class with no-op defaults.

`trainables.tune.events.TrialEvents`, Tune's callback in the driver, turns Tune's trial
events into calls of these methods with plain data. The study's listeners (the MLflow
tracker in study/tracking.py, the progress printer in study/progress.py) subclass
`TrialListener` and override the events they use; `Fanout` hands every event to several.
This module imports neither ray nor torch, so `study` uses it without starting anything.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

# How a trial ended (the `state` of trial_ended); "running" and "interrupted" are set by the
# study around Tune (a trial running, or still running when the driver stopped).
COMPLETED, PRUNED, ERRORED = "completed", "pruned", "errored"


def ended_state(epochs_done: int, max_epochs: int) -> str:
    """State of a trial Tune finished without error: completed if it trained every epoch,
    else pruned (stopped early by the scheduler)."""
    return COMPLETED if epochs_done >= max_epochs else PRUNED


class TrialListener:
    """Receives a study's trial events in the driver; every event is a no-op by default."""

    def trial_started(self, trial_id: str, config: dict[str, Any], fixed: bool) -> None:
        """A trial starts, also again after a retry or a resume. config: its flat TrialConfig
        values; fixed: one of the space's fixed trials (not proposed by Optuna)."""

    def trial_result(self, trial_id: str, metrics: dict[str, float]) -> None:
        """One epoch's reported metrics (Ray's bookkeeping keys removed); `epoch` is among them."""

    def trial_hardware(self, trial_id: str, description: str) -> None:
        """The hardware the trial's latest epoch ran on (trainables/hardware.py), e.g. "cpu: <model> (1 torch threads)"."""

    def trial_tags(self, trial_id: str, tags: dict[str, str]) -> None:
        """Strings the trial reported beside its metrics, for its run's tags: the exact feature extractor
        of its distances (search_spaces.metric_names.EXTRACTOR_TAGS: extractor_sha, extractor_accuracy)."""

    def trial_checkpoint(self, trial_id: str, directory: str) -> None:
        """A checkpoint was saved; `directory` holds a local copy of its sample grids (*.png), valid during
        the call only."""

    def trial_retrying(self, trial_id: str, failures: int) -> None:
        """The trial failed and restarts from its latest checkpoint; `failures` so far."""

    def trial_ended(self, trial_id: str, state: str, error: Optional[str], optuna: Optional[dict],
                    metrics: dict[str, float]) -> None:
        """The trial ended: state completed | pruned | errored; error: the exception line of an
        errored trial; optuna: {"number", "state"} of its Optuna trial (None for fixed trials);
        metrics: its last reported metrics."""

    def optuna_history(self, history: list[dict]) -> None:
        """Optuna's trials so far, as plain dicts, after each trial ends."""

    def study_ended(self, history: list[dict]) -> None:
        """Tune finished the experiment (all trials ended); Optuna's final history."""


EVENTS = tuple(name for name in vars(TrialListener) if not name.startswith("_"))


class Fanout(TrialListener):
    """Hands every event to each of `listeners`, in order."""

    def __init__(self, *listeners: TrialListener):
        self.listeners = listeners


def _forwarding(event: str):
    @functools.wraps(getattr(TrialListener, event))
    def forward(self: Fanout, *args) -> None:
        for listener in self.listeners:
            getattr(listener, event)(*args)
    return forward


for _event in EVENTS:  # one forwarding method per event, with the base method's signature and doc
    setattr(Fanout, _event, _forwarding(_event))
