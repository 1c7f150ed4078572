"""Searchers: Optuna with PRUNED trials, and the wrapper that runs a space's fixed trials beside it."""
from __future__ import annotations

from typing import Optional

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables.tune.internals import optuna_study, optuna_trials, told_trials


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records early-stopped trials as PRUNED and reports intermediate values by epoch.

    Ray's OptunaSearch tells every trial with a result as COMPLETE, so an ASHA-stopped
    trial enters TPE's history as a finished one with a part-trained value. Here a trial
    that ends before `max_epochs` is PRUNED (Optuna keeps its last intermediate value).

    With an RDB `storage` the database runs ahead of Tune's searcher checkpoint, which a
    resume restores: `restore` brings the two back together (see there).
    """

    def restore(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint, reconciled with a storage that kept going after it was taken:
        trials the storage finished are not told again (Optuna refuses to update a finished trial),
        steps it holds are not reported again, and trials asked after the checkpoint (Tune forgot
        them with it, so nothing will ever finish them) end FAIL instead of RUNNING forever."""
        super().restore(checkpoint_path)
        if self._ot_study is None:
            return
        stored = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        known = {trial.number: trial_id for trial_id, trial in self._ot_trials.items()}
        reported = self.__dict__.setdefault("_reported_steps", set())
        for number, frozen in stored.items():
            if number not in known:
                if not frozen.state.is_finished():
                    self._ot_study._storage.set_trial_state_values(frozen._trial_id, state=optuna_state("FAIL"))
                continue
            reported.update((known[number], step) for step in frozen.intermediate_values)
            if frozen.state.is_finished():
                self._completed_trials.add(known[number])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or self.metric not in result:
            return  # multi-objective Optuna takes no intermediate values; non-evaluation epochs lack it
        reported = self.__dict__.setdefault("_reported_steps", set())  # a resumed trial repeats epochs
        if trial_id not in told_trials(self) and (trial_id, int(result["epoch"])) not in reported:
            optuna_trials(self)[trial_id].report(float(result[self.metric]), int(result["epoch"]))
            reported.add((trial_id, int(result["epoch"])))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if result and not error and trial_id not in told_trials(self):
            if int(result.get("epoch", 0)) < int(result["config/max_epochs"]):
                optuna_study(self).tell(optuna_trials(self)[trial_id], state=optuna_state("PRUNED"))
                told_trials(self).add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """Plain data of the Optuna trial behind a Tune trial: number, state, values, params."""
        if trial_id not in optuna_trials(self):
            return None
        frozen = optuna_study(self).get_trials(deepcopy=False)[optuna_trials(self)[trial_id].number]
        return {"number": frozen.number, "state": frozen.state.name, "values": frozen.values, "params": frozen.params}

    def optuna_history(self) -> list[dict]:
        trials = optuna_study(self).get_trials(deepcopy=False)
        best = {t.number for t in optuna_study(self).best_trials} if any(t.state.name == "COMPLETE" for t in trials) else set()
        return [{"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
                 "pareto_optimal": t.number in best} for t in trials]


def optuna_state(name: str):
    import optuna

    return optuna.trial.TrialState[name]


class _NothingToSearch(Searcher):
    """The inner searcher of a space without searched params: proposes nothing."""

    def suggest(self, trial_id: str):
        return Searcher.FINISHED

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:  # a complete pickle: an empty file reads as one cut by a full disk
            pickle.dump({}, f)

    def restore(self, checkpoint_path: str) -> None:
        pass

    def optuna_trial(self, trial_id: str):
        return None

    def optuna_history(self) -> list[dict]:
        return []


class FixedTrialsFirst(Searcher):
    """Run a space's fixed trials (e.g. the sigma = 0 baseline) first, then the inner searcher's.

    Fixed trials are never told to the inner searcher, so Optuna's history holds only points
    of its own search space. A Tune wrapper (it has `.searcher`): Tune saves its state with
    get_state and the inner searcher's with save/restore, in place.
    """

    def __init__(self, fixed: list[dict], searcher: Searcher):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.fixed = searcher, [dict(c) for c in fixed]
        self.fixed_ids: dict[str, int] = {}  # Tune trial id -> index in `fixed`

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # configured at construction

    def suggest(self, trial_id: str):
        if trial_id in self.fixed_ids:
            return dict(self.fixed[self.fixed_ids[trial_id]])
        if len(self.fixed_ids) < len(self.fixed):
            self.fixed_ids[trial_id] = len(self.fixed_ids)
            return dict(self.fixed[self.fixed_ids[trial_id]])
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.fixed_ids:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id not in self.fixed_ids:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def is_fixed(self, trial_id: str) -> bool:
        return trial_id in self.fixed_ids

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """The inner searcher's Optuna trial of `trial_id` (None for a fixed trial), as plain data."""
        return self.searcher.optuna_trial(trial_id)

    def optuna_history(self) -> list[dict]:
        return self.searcher.optuna_history()

    def get_state(self) -> dict:
        return {"fixed": self.fixed, "fixed_ids": dict(self.fixed_ids)}

    def set_state(self, state: dict) -> None:
        self.fixed, self.fixed_ids = state["fixed"], dict(state["fixed_ids"])
