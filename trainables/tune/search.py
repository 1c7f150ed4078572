"""Searchers: Optuna through its public ask/tell, and the wrapper that runs a space's fixed trials beside it."""
from __future__ import annotations

import logging
import pickle
from typing import Optional

from ray.tune.search import Searcher

logger = logging.getLogger(__name__)


class OptunaSearcher(Searcher):
    """Optuna's ask-and-tell as a Tune Searcher, through Optuna's public API only.

    Each Tune trial asks one Optuna trial (`study.ask(distributions)`); its objective at each
    evaluation epoch is reported as an intermediate value at that epoch (single objective only:
    Optuna takes none for several); at its end it is told once (`skip_if_finished=True`):
    COMPLETE with its final value(s) when it ran `max_epochs` (the result's `config/max_epochs`),
    PRUNED when it ended before (an ASHA stop: Optuna keeps its last intermediate value), FAIL
    when it errored or its value is not a finite number.

    `storage`: an Optuna RDB URL or storage, None for memory. Each Optuna trial carries its Tune
    trial's id (user attribute `tune_trial_id`, visible in optuna-dashboard). The state saved with
    Tune's searcher checkpoint (`save`/`restore`: the pickled study, the live optuna.Trial objects,
    what was reported and told) is older than an RDB storage that kept going; `restore` brings
    the two back together (see there), and `reconcile` brings it in line with Tune's trials.
    """

    TUNE_ID = "tune_trial_id"

    def __init__(self, space: dict, metric, mode, sampler=None, storage=None, study_name: Optional[str] = None):
        import optuna

        super().__init__(metric=metric, mode=mode)
        modes = mode if isinstance(mode, list) else [mode]
        self.space = dict(space)
        if storage is None:
            storage = optuna.storages.InMemoryStorage()
        elif isinstance(storage, str):
            storage = optuna.storages.RDBStorage(storage)
        self.storage = storage  # kept: adopting a trial needs its storage id (reconcile)
        self.study = optuna.create_study(
            storage=storage, sampler=sampler, pruner=optuna.pruners.NopPruner(), study_name=study_name,
            load_if_exists=True, directions=["minimize" if m == "min" else "maximize" for m in modes])
        self.trials: dict = {}                       # Tune trial id -> optuna.Trial
        self.reported: set[tuple[str, int]] = set()  # (Tune trial id, epoch) reported
        self.told: set[str] = set()                  # Tune trial ids told

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # configured at construction

    def suggest(self, trial_id: str):
        if trial_id not in self.trials:
            trial = self.study.ask(fixed_distributions=self.space)
            trial.set_user_attr(self.TUNE_ID, trial_id)
            self.trials[trial_id] = trial
        return dict(self.trials[trial_id].params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or self.metric not in result:
            return  # multi-objective Optuna takes no intermediate values; non-evaluation epochs lack it
        step = (trial_id, int(result["epoch"]))  # a resumed trial repeats epochs
        if trial_id in self.trials and trial_id not in self.told and step not in self.reported:
            self.trials[trial_id].report(float(result[self.metric]), step[1])
            self.reported.add(step)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        import optuna

        if trial_id not in self.trials or trial_id in self.told:
            return  # not ours, or a completion Tune repeats after a resume
        state, values = optuna.trial.TrialState.PRUNED, None
        if error:
            state = optuna.trial.TrialState.FAIL
        elif result and int(result.get("epoch", 0)) >= int(result.get("config/max_epochs", 0)):
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics]
            finite = all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in values)
            state, values = (optuna.trial.TrialState.COMPLETE, values) if finite else (optuna.trial.TrialState.FAIL, None)
        try:
            self.study.tell(self.trials[trial_id], values, state=state, skip_if_finished=True)
        except (ValueError, RuntimeError) as err:  # a value Optuna refuses: the study goes on
            logger.warning("Optuna refused the end of trial %s: %s", trial_id, err)
        self.told.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        state = {"study": self.study, "storage": self.storage, "trials": self.trials, "reported": self.reported,
                 "told": self.told, "space": self.space}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint, reconciled with a storage that kept going after it was taken:
        trials the storage finished are not told again and steps it holds are not reported again.
        Proposals the checkpoint does not know stay as they are until `reconcile` learns whether
        Tune has their trials."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.study, self.trials, self.space = state["study"], state["trials"], state["space"]
        self.storage = state.get("storage")  # None in a checkpoint from before it was kept
        self.reported, self.told = set(state["reported"]), set(state["told"])
        self._sync_with_storage()

    def _sync_with_storage(self) -> None:
        known = {trial.number: trial_id for trial_id, trial in self.trials.items()}
        for frozen in self.study.get_trials(deepcopy=False):
            if frozen.number in known:
                self.reported.update((known[frozen.number], step) for step in frozen.intermediate_values)
                if frozen.state.is_finished():
                    self.told.add(known[frozen.number])

    def reconcile(self, trials: dict[str, dict]) -> dict[str, dict]:
        """Line up with Tune's restored trials (reconcile_search.py): a proposal Tune lacks ends FAIL;
        a Tune trial this searcher lacks gets its Optuna trial back (by its `tune_trial_id`, else a
        new one with its params), and is told now if Tune had already ended it."""
        import optuna

        for trial_id, trial in self.trials.items():
            if trial_id not in trials and trial_id not in self.told:
                logger.warning("Optuna trial %d: its Tune trial %s was lost with the head node; closed FAIL",
                               trial.number, trial_id)
                self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                self.told.add(trial_id)
        by_tune_id = {frozen.user_attrs.get(self.TUNE_ID): frozen for frozen in self.study.get_trials(deepcopy=False)}
        for trial_id, info in trials.items():
            if trial_id in self.trials:
                continue
            frozen = by_tune_id.get(trial_id)
            self.trials[trial_id] = self._adopt(trial_id, frozen, info["config"])
            logger.info("Tune trial %s: Optuna trial %d %s", trial_id, self.trials[trial_id].number,
                        "adopted" if frozen is not None else "asked again with its params")
            self._sync_with_storage()
        for trial_id, info in trials.items():  # Tune will not end these again
            if info["status"] in ("TERMINATED", "ERROR") and trial_id not in self.told:
                self.on_trial_complete(trial_id, info["last_result"], error=info["status"] == "ERROR")
        held = {trial.number for trial in self.trials.values()}
        for frozen in self.study.get_trials(deepcopy=False):  # asked, held by no Tune trial
            if not frozen.state.is_finished() and frozen.number not in held:
                self.study.tell(frozen.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        return trials

    def _adopt(self, trial_id: str, frozen, config: dict):
        """The optuna.Trial of `frozen` (Optuna's public Trial(study, storage id)); without one (or without
        the storage, a checkpoint from before it was kept), a new trial asked with the config's params."""
        import optuna

        if frozen is not None and self.storage is not None:
            study_id = self.storage.get_study_id_from_name(self.study.study_name)
            return optuna.trial.Trial(self.study, self.storage.get_trial_id_from_study_id_trial_number(
                study_id, frozen.number))
        params = {name: config[name] for name in self.space if name in config}
        self.study.enqueue_trial(params, skip_if_exists=False)
        trial = self.study.ask(fixed_distributions=self.space)
        trial.set_user_attr(self.TUNE_ID, trial_id)
        return trial

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """Plain data of the Optuna trial behind a Tune trial: number, state, values, params."""
        if trial_id not in self.trials:
            return None
        frozen = self.study.get_trials(deepcopy=False)[self.trials[trial_id].number]
        return {"number": frozen.number, "state": frozen.state.name, "values": frozen.values, "params": frozen.params}

    def optuna_history(self) -> list[dict]:
        trials = self.study.get_trials(deepcopy=False)
        best = {t.number for t in self.study.best_trials} if any(t.state.name == "COMPLETE" for t in trials) else set()
        return [{"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
                 "pareto_optimal": t.number in best} for t in trials]


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

    def reconcile(self, trials: dict[str, dict]) -> dict[str, dict]:
        return trials

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

    def reconcile(self, trials: dict[str, dict]) -> dict[str, dict]:
        """Line up with Tune's restored trials (reconcile_search.py): a fixed trial Tune lacks is proposed
        again; a Tune trial this wrapper lacks whose config is an unassigned fixed one becomes it. The
        other trials are what the inner searcher sees."""
        self.fixed_ids = {t: i for t, i in self.fixed_ids.items() if t in trials}
        for trial_id, info in trials.items():
            free = sorted(set(range(len(self.fixed))) - set(self.fixed_ids.values()))
            if trial_id in self.fixed_ids or not free:
                continue
            match = [i for i in free if all(info["config"].get(k) == v for k, v in self.fixed[i].items())]
            known = getattr(self.searcher, "trials", {})
            if match and trial_id not in known:
                self.fixed_ids[trial_id] = match[0]
        return {t: info for t, info in trials.items() if t not in self.fixed_ids}

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """The inner searcher's Optuna trial of `trial_id` (None for a fixed trial), as plain data."""
        return self.searcher.optuna_trial(trial_id)

    def optuna_history(self) -> list[dict]:
        return self.searcher.optuna_history()

    def get_state(self) -> dict:
        return {"fixed": self.fixed, "fixed_ids": dict(self.fixed_ids)}

    def set_state(self, state: dict) -> None:
        self.fixed, self.fixed_ids = state["fixed"], dict(state["fixed_ids"])
