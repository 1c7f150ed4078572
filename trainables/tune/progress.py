"""How far the whole study is, as plain data, at each trial event and at least once a minute.

`StudyProgress` is a Tune callback (Tune hands every hook the full trial list); it reduces
that list to a `StudyStatus` and hands it to a listener (`study_progress(status)`, duck-typed;
the study prints it as one line). `study_status` is the arithmetic, a pure function.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ray import tune

from trainables.tune.events import DRIVER

HEARTBEAT_S = 60.0  # a status line at least this often, also when no trial event happens


@dataclass(frozen=True)
class TrialView:
    """What the status needs of one Tune trial."""
    trial_id: str
    status: str               # Tune's: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    epoch: int                # last reported epoch (0: none yet)
    best: Optional[float]     # best objective value it reported (None: no evaluation yet)


@dataclass(frozen=True)
class StudyStatus:
    total: int                # trials the study will run (searched + fixed)
    completed: int            # ended at max_epochs
    pruned: int               # stopped early by the scheduler
    errored: int
    running: int
    pending: int              # not started yet, including trials the searcher has not proposed yet
    best_value: Optional[float]
    best_trial: Optional[str]
    elapsed_s: float          # since this session of the study started
    eta_s: Optional[float]    # None until an epoch was measured

    @property
    def finished(self) -> int:
        return self.completed + self.pruned + self.errored


def study_status(trials: list[TrialView], total: int, max_epochs: int, mode: str, epochs_done: int,
                 elapsed_s: float) -> StudyStatus:
    """Counts by state, the best objective value so far, and the time left.

    Time left = epochs still to run / epochs per second of this session (all trials together,
    so the concurrency is in the rate): every unfinished trial is counted to max_epochs and
    every trial not proposed yet as max_epochs, so with ASHA it is an upper bound.
    """
    finished = {"TERMINATED", "ERROR"}
    completed = sum(t.status == "TERMINATED" and t.epoch >= max_epochs for t in trials)
    pruned = sum(t.status == "TERMINATED" and t.epoch < max_epochs for t in trials)
    errored = sum(t.status == "ERROR" for t in trials)
    running = sum(t.status == "RUNNING" for t in trials)
    pending = sum(t.status in ("PENDING", "PAUSED") for t in trials) + max(0, total - len(trials))
    remaining = sum(max(0, max_epochs - t.epoch) for t in trials if t.status not in finished)
    remaining += max(0, total - len(trials)) * max_epochs
    eta = remaining * elapsed_s / epochs_done if epochs_done > 0 else (0.0 if remaining == 0 else None)
    scored = [t for t in trials if t.best is not None]
    pick = min if mode == "min" else max
    best = pick(scored, key=lambda t: t.best) if scored else None
    return StudyStatus(total=total, completed=completed, pruned=pruned, errored=errored, running=running,
                       pending=pending, best_value=best.best if best else None,
                       best_trial=best.trial_id if best else None, elapsed_s=elapsed_s, eta_s=eta)


class StudyProgress(tune.Callback):
    """Hands the study's status to `listener.study_progress(status)` at each trial event and at
    least every HEARTBEAT_S. Like TrialEvents, it never pickles its listener: the driver attaches
    its own (trainables/tune/events.py: attach_driver, read in `setup`), with the study's current total."""

    def __init__(self, total: int, max_epochs: int, metric: str, mode: str, study_name: Optional[str] = None):
        self.listener, self.total, self.max_epochs, self.metric, self.mode = None, total, max_epochs, metric, mode
        self.study_name = study_name
        self._start = self._last = time.monotonic()
        self._epochs = 0

    def attach(self, listener, total: int) -> None:
        self.listener, self.total = listener, total

    def __getstate__(self):  # pickled into tuner.pkl: a resumed session measures its own rate
        return {k: v for k, v in self.__dict__.items() if k not in ("_start", "_last", "_epochs", "listener")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.listener = None
        self._start = self._last = time.monotonic()
        self._epochs = 0

    def setup(self, **info):
        self._start = self._last = time.monotonic()
        driver = DRIVER.get(self.study_name) if self.study_name else None
        if driver is not None:
            self.attach(driver.progress, driver.total)
        self._epochs = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._epochs += 1  # one result per epoch; repeats after a restore are work done, too

    def on_trial_start(self, iteration, trials, trial, **info):
        self._report(trials, trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._report(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._report(trials, trial, "ERROR")

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last >= HEARTBEAT_S:
            self._report(trials, None, None)

    def _report(self, trials, event_trial, event_status: Optional[str]) -> None:
        """Tune may set the trial's new status after the hook: the event says what it is."""
        if self.listener is None:
            return
        views = [self._view(t, event_status if t is event_trial else t.status) for t in trials]
        now = time.monotonic()
        self._last = now
        self.listener.study_progress(study_status(views, self.total, self.max_epochs, self.mode, self._epochs,
                                                  now - self._start))

    def _view(self, trial, status: str) -> TrialView:
        analysis = (trial.metric_analysis or {}).get(self.metric, {})
        return TrialView(trial.trial_id, status, int((trial.last_result or {}).get("epoch", 0)),
                         analysis.get(self.mode))
