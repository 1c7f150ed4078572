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
    def __init__(self, searched: list[str], seed: int, objective: tuple[str, ...], max_epochs: int):
        self.searched, self.seed, self.objective, self.max_epochs = searched, seed, objective, max_epochs
        self.names: dict[str, str] = {}
        self.hardware: dict[str, str] = {}
        self.samples: dict[str, Any] = {}  # trial id -> generated images behind its distances

    def _say(self, trial_id: str, text: str) -> None:
        name = self.names.get(trial_id, trial_id)
        print(f"{time.strftime('%H:%M:%S')}  {name:<24} {text}", file=sys.stdout, flush=True)

    def trial_started(self, trial_id: str, config: dict[str, Any], fixed: bool) -> None:
        self.names[trial_id] = run_name(config, self.searched, self.seed)
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
            tail += f" (Optuna trial {optuna['number']}: {optuna['state']})"
        self._say(trial_id, f"{state}{tail}")
