"""What the driver prints while a study runs: one line per trial event, instead of Tune's tables.

`ProgressPrinter` is a `TrialListener` (trainables/tune/listener.py), like the MLflow tracker.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from study.summary import with_se
from study.tracking import run_name
from trainables.tune.listener import TrialListener


class ProgressPrinter(TrialListener):
    def __init__(self, searched: list[str], seed: int, objective: tuple[str, ...], max_epochs: int, namer=None):
        self.searched, self.seed, self.objective, self.max_epochs = searched, seed, objective, max_epochs
        self.namer = namer  # trial id -> its MLflow run name (`#3 smoothed s=0.48 K=5`), or None
        self.names: dict[str, str] = {}
        self.hardware: dict[str, str] = {}
        self.samples: dict[str, Any] = {}  # trial id -> generated images behind its distances

    def _say(self, trial_id: str, text: str) -> None:
        name = self.names.get(trial_id, trial_id)
        print(f"{time.strftime('%H:%M:%S')}  {name:<24} {text}", file=sys.stdout, flush=True)

    def trial_started(self, trial_id: str, config: dict[str, Any], fixed: bool) -> None:
        named = getattr(self, "namer", None)  # a printer pickled by an older study has none
        self.names[trial_id] = (named and named(trial_id)) or run_name(config, self.searched, self.seed)
        self.samples[trial_id] = config.get("num_eval_samples")
        self._say(trial_id, f"started (trial {trial_id}{', fixed' if fixed else ''})")

    def trial_hardware(self, trial_id: str, description: str) -> None:
        if self.hardware.get(trial_id) != description:  # once, and again if a retry moved the trial
            self.hardware[trial_id] = description
            self._say(trial_id, f"on {description}")

    def trial_result(self, trial_id: str, metrics: dict[str, float]) -> None:
        keys = [k for k in (*self.objective, "bpd_bound") if k in metrics]
        keys = list(dict.fromkeys(keys))
        text = "  ".join(f"{k}={metrics[k]:.4g}{with_se(metrics, k)}" for k in keys)
        if any(with_se(metrics, k) for k in keys):
            text += f"  (± SE, {self.samples.get(trial_id, '?')} samples)"
        rate = metrics.get("images_per_s")
        self._say(trial_id, f"epoch {int(metrics['epoch'])}/{self.max_epochs}  {text}"
                  + (f"  ({rate:.0f} img/s)" if rate else ""))

    def trial_retrying(self, trial_id: str, failures: int) -> None:
        self._say(trial_id, f"failed; retrying from its latest checkpoint (failure {failures})")

    def trial_ended(self, trial_id: str, state: str, error: Optional[str], optuna: Optional[dict],
                    metrics: dict[str, float]) -> None:
        tail = f": {error}" if error else ""
        if optuna:
            told = (optuna["state"] if optuna["state"] != "RUNNING"  # --repeats: told when all seeds ended
                    else "told the mean when the other seeds of its configuration end")
            tail += f" (Optuna trial {optuna['number']}: {told})"
        self._say(trial_id, f"{state}{tail}")


class StudyLine:
    """The study-wide line (`trainables.tune.progress.StudyProgress` calls `study_progress`), e.g.

    10:02:13  study: 3/7 done (2 completed, 1 pruned, 0 errored), 2 running, 2 pending | best
    fd_digits_cnn=157.7 (#4 smoothed s=0.48 K=5) | elapsed 3.1 min, at most ~4.0 min left
    """

    def __init__(self, objective: str, namer=None, out=None):
        self.objective, self.namer, self.out = objective, namer, out

    def study_progress(self, status) -> None:
        print(f"{time.strftime('%H:%M:%S')}  {format_status(status, self.objective, self.namer)}",
              file=self.out or sys.stdout, flush=True)


def format_status(status, objective: str, namer=None) -> str:
    s = status
    text = (f"study: {s.finished}/{s.total} done ({s.completed} completed, {s.pruned} pruned, {s.errored} errored), "
            f"{s.running} running, {s.pending} pending")
    if s.best_value is not None:
        who = (namer and namer(s.best_trial)) or s.best_trial
        text += f" | best {objective}={s.best_value:.4g} ({who})"
    text += f" | elapsed {_minutes(s.elapsed_s)}"
    if s.finished == s.total:
        return text
    if s.eta_s is None:
        return text + ", time left: after the first epoch"
    return text + f", at most ~{_minutes(s.eta_s)} left"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
