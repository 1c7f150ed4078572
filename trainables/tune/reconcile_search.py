"""A restored searcher brought back into line with the trials Tune restored.

Tune saves a study's state as separate files: its trials (experiment_state-*.json), the
search wrappers' states (search_gen_state-*: the trial counter, ConcurrencyLimiter's live
trials, SeededRepeater, FixedTrialsFirst) and the base searcher's (searcher-state-*.pkl:
which Tune trial holds which Optuna trial). It writes them one after another and uploads
them to remote storage side by side, so a driver killed mid-write or mid-upload leaves
files of different moments; the head node's local copy is gone with it. Tune then restores
trials that the searcher never proposed (their Optuna trials closed FAIL while the trials
ran to the end: a completed point missing from Optuna, the CI failure of 94647ac), or a
searcher that proposed trials Tune never saw (a slot of ConcurrencyLimiter held forever,
a fixed trial never run, one trial fewer than the study's total).

The experiment state is the truth (it is what Tune runs). Before the first new trial,
`reconcile(search, trials)` walks the searcher chain once, outermost first, with Tune's
restored trials as plain data, `{trial id: {"config", "status", "last_result"}}`:

- the trial counter is the number of Tune's trials (no trial lost, none created twice);
- ConcurrencyLimiter's live trials are Tune's unfinished trials;
- FixedTrialsFirst forgets fixed trials Tune lacks (they are proposed again) and adopts a
  Tune trial whose config is an unassigned fixed one;
- SeededRepeater with R > 1 forgets trials Tune lacks; a Tune trial of unknown group is
  reported in one warning line (its repeats are not regrouped);
- OptunaSearcher closes FAIL the proposals Tune lacks and adopts the Optuna trial of each
  Tune trial it lacks (found in the RDB by its `tune_trial_id` user attribute, else asked
  anew with the trial's params); a trial Tune had already ended is told now.
"""
from __future__ import annotations

import logging
from typing import Optional

from ray.tune.search import ConcurrencyLimiter, SearchGenerator

logger = logging.getLogger(__name__)

UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def restored_trials(path: str, filesystem=None) -> Optional[dict[str, dict]]:
    """Tune's trials in the experiment state a restore of `path` resumes (the newest), as plain data;
    None where Tune saved none yet (a study killed before its first save: Tune starts it afresh)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=filesystem)
    except ValueError:  # "No experiment snapshot file of form 'experiment_state-*.json' was found"
        return None
    return {t.trial_id: {"config": dict(t.config or {}), "status": str(t.status),
                         "last_result": dict(t.last_result or {})} for t in analysis.trials}


def generator_state(state: dict, trials: dict[str, dict]) -> dict:
    """A SearchGenerator's saved state (its public get_state keys) with the counter set to Tune's trials."""
    return {**state, "counter": len(trials)}


def reconcile(searcher, trials: dict[str, dict]) -> None:
    """Walk the chain below a SearchGenerator (module docstring); each layer reconciles its own state."""
    layer = searcher
    while layer is not None:
        if isinstance(layer, ConcurrencyLimiter):
            state = layer.get_state()
            live = {t for t, info in trials.items() if info["status"] in UNFINISHED}
            if set(state.get("live_trials", ())) != live:
                logger.info("concurrency: live trials %s -> %s", sorted(state.get("live_trials", ())), sorted(live))
            layer.set_state({**state, "live_trials": live})
        elif hasattr(layer, "reconcile") and not isinstance(layer, SearchGenerator):
            trials = layer.reconcile(trials)  # what the inner layer sees
        layer = getattr(layer, "searcher", None)
