"""Each configuration with R seeds (`--repeats R`): Ray's public `Repeater`, told the mean over the seeds.

`SeededRepeater` wraps the study's searcher (FixedTrialsFirst: the fixed trials, then
Optuna's). Every configuration it proposes (an Optuna trial, a fixed trial such as the
sigma = 0 baseline) becomes R Tune trials, the group, with seeds S + 0, ..., S + R - 1
(S: the configuration's own `seed`, else the study's). The first trial of a group is its
*primary*: the only trial id the inner searcher ever sees, so Optuna holds ONE trial per
configuration.

What Optuna is told, once every trial of the group has ended:
- every repeat completed: COMPLETE with the mean over the R final values of each objective;
- any repeat errored (after its retries): FAIL, like a single errored trial (TPE ignores it);
- else, any repeat stopped early (ASHA prunes Tune trials one by one): PRUNED. Its last
  intermediate value is the mean at the last evaluation epoch ALL R repeats reached, so
  TPE ranks a pruned configuration by the same kind of number as a completed one. The
  mean of the surviving repeats alone is not told: ASHA stops the worse seeds, so it
  would be biased towards the good ones.
Intermediate values (single objective only, as before) are the mean over the R repeats
at an epoch, reported once all R have a value there.

Ray's own `Repeater.on_trial_complete` tells the nan-mean of whatever each repeat last
reported, stopped early or not, and nothing in between; it is replaced here. The state
lives in the instance (`Repeater.get_state` saves its __dict__ with Tune's searcher
checkpoint), so a resumed study continues every group where its checkpoint left it: the
trials Tune restores keep their group, the trials it creates anew fill the open group
first, and a group the storage had told already is not told twice (the inner
OptunaSearcher reconciles with its storage on restore).

With R = 1 every event passes through unchanged, as without this wrapper.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from trainables.tune.listener import COMPLETED, ERRORED, PRUNED, ended_state

logger = logging.getLogger(__name__)
MAX_EPOCHS_KEY = "config/max_epochs"  # Tune's flattened result carries the trial's config


class SeededRepeater(Repeater):
    """Ray's Repeater with seeds S..S+R-1 per group and the study's rule for what Optuna is told."""

    def __init__(self, searcher: Searcher, repeat: int, seed: int):
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.seed = int(seed)
        self.primary_of: dict[str, str] = {}        # Tune trial id -> the group's primary trial id
        self.ended: dict[str, dict] = {}            # trial id -> {"state", "epoch", "values"} at its end
        self.evaluated: dict[str, dict[int, dict[str, float]]] = {}  # primary -> epoch -> {trial id: value}
        self.max_epochs: dict[str, int] = {}        # primary -> the group's max_epochs (from its results)
        self.reported: set[tuple[str, int]] = set()  # (primary, epoch) whose mean the inner searcher has
        self.told: set[str] = set()                 # primaries told to the inner searcher
        self._primary: Optional[str] = None         # the group being filled

    # ------------------------------------------------------------ proposals

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        index = int(config.pop(TRIAL_INDEX))
        if index == 0:
            self._primary = trial_id
        self.primary_of[trial_id] = self._primary
        if self.repeat > 1:
            config["seed"] = int(config.get("seed", self.seed)) + index
        return config

    def primary(self, trial_id: str) -> str:
        """The group's primary trial id (the trial itself outside any group)."""
        return self.primary_of.get(trial_id, trial_id)

    def members(self, primary: str) -> list[str]:
        return [t for t, p in self.primary_of.items() if p == primary]

    # ------------------------------------------------------------ results

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.repeat == 1:
            self.searcher.on_trial_result(trial_id, result)
            return
        self._record_evaluation(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if self.repeat == 1:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        if trial_id not in self.primary_of or trial_id in self.ended:
            return  # not ours, or a completion Tune repeats after a resume
        if result:  # an ASHA-stopped trial's last result reaches the searcher only here
            self._record_evaluation(trial_id, result)
        epoch = int((result or {}).get("epoch", 0))
        max_epochs = self.max_epochs.get(self.primary(trial_id), 0)
        state = ERRORED if error else ended_state(epoch, max_epochs) if max_epochs else PRUNED
        self.ended[trial_id] = {"state": state, "epoch": epoch, "values": self._objectives(result or {})}
        primary = self.primary(trial_id)
        members = self.members(primary)
        if primary not in self.told and len(members) == self.repeat and all(m in self.ended for m in members):
            self._tell(primary, [self.ended[m] for m in members])

    def _objectives(self, result: dict) -> dict[str, float]:
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        return {m: float(result[m]) for m in metrics if m is not None and _is_number(result.get(m))}

    def _record_evaluation(self, trial_id: str, result: dict) -> None:
        """Keep the trial's objective at this epoch; report the group's mean once all R have one."""
        primary = self.primary(trial_id)
        if MAX_EPOCHS_KEY in result:
            self.max_epochs[primary] = int(result[MAX_EPOCHS_KEY])
        metric = self.searcher.metric
        if isinstance(metric, list) or metric is None or not _is_number(result.get(metric)):
            return  # multi-objective Optuna takes no intermediate values; non-evaluation epochs lack it
        epoch = int(result["epoch"])
        at_epoch = self.evaluated.setdefault(primary, {}).setdefault(epoch, {})
        at_epoch[trial_id] = float(result[metric])
        if len(at_epoch) == self.repeat and primary not in self.told and (primary, epoch) not in self.reported:
            self.reported.add((primary, epoch))
            self.searcher.on_trial_result(primary, {metric: _mean(at_epoch.values()), "epoch": epoch,
                                                    MAX_EPOCHS_KEY: self.max_epochs.get(primary, 0)})

    def _tell(self, primary: str, ends: list[dict]) -> None:
        """Tell the inner searcher the group's outcome once (module docstring: the rule)."""
        self.told.add(primary)
        states = {e["state"] for e in ends}
        max_epochs = self.max_epochs.get(primary, 0)
        if ERRORED in states:
            self.searcher.on_trial_complete(primary, result=None, error=True)
        elif states == {COMPLETED}:
            names = set().union(*(e["values"] for e in ends))
            means = {m: _mean(e["values"][m] for e in ends if m in e["values"]) for m in names}
            self.searcher.on_trial_complete(primary, result={**means, "epoch": max_epochs, MAX_EPOCHS_KEY: max_epochs})
        elif max_epochs:
            epoch = min(e["epoch"] for e in ends)
            self.searcher.on_trial_complete(primary, result={"epoch": epoch, MAX_EPOCHS_KEY: max_epochs})
        else:  # no repeat ever reported (all stopped before their first result): PRUNED without a value
            self.searcher.on_trial_complete(primary, result=None, error=False)

    def reconcile(self, trials: dict[str, dict]) -> dict[str, dict]:
        """Line up with Tune's restored trials (reconcile_search.py). R = 1: nothing of its own to line up.
        R > 1: trials Tune lacks are forgotten; a Tune trial of unknown group is named in one warning line
        (its repeats are not regrouped). The inner searcher sees the groups' primaries."""
        if self.repeat == 1:
            return trials
        for table in (self.primary_of, self.ended):
            for trial_id in [t for t in table if t not in trials]:
                del table[trial_id]
        for at_epochs in self.evaluated.values():
            for at_epoch in at_epochs.values():
                for trial_id in [t for t in at_epoch if t not in trials]:
                    del at_epoch[trial_id]
        unknown = sorted(t for t in trials if t not in self.primary_of)
        if unknown:
            logger.warning("repeats: the searcher's saved state lacks Tune trial(s) %s; their groups' means "
                           "reach Optuna only if all R repeats end", ", ".join(unknown))
        return {t: info for t, info in trials.items() if self.primary_of.get(t) == t}

    # ------------------------------------------------------------ what the study asks of its searcher

    def is_fixed(self, trial_id: str) -> bool:
        return self.searcher.is_fixed(self.primary(trial_id))

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """The Optuna trial of the trial's group (one per configuration), as plain data."""
        return self.searcher.optuna_trial(self.primary(trial_id))

    def optuna_history(self) -> list[dict]:
        return self.searcher.optuna_history()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
