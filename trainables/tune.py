"""The Ray Tune adapter: the only module of the project that imports ray.

It holds what must speak Ray's API and nothing else: the function trainable, the
searcher wrapper that runs a space's fixed trials beside Optuna, the Optuna and ASHA
fixes, the callback that hands trial events to a plain Python listener (the study's
MLflow tracker), and building/restoring/fitting the Tuner. Study logic lives in
`study/`, which passes plain data in and gets plain data back.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import ray
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables.config import TrialConfig

# The objective exists only at evaluation epochs; Tune's strict check wants every metric in
# every result. Schedulers and searchers here skip results without it (ASHA does natively).
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# The driver prints one line per trial event (study/progress.py); Tune's legacy output engine
# at verbose=0 stays silent (the new one still prints its banners and a TensorBoard hint).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

RAY_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint", "__duplicate__"}
DIVERGED_FILE = "diverged.txt"  # in the trial's storage dir: a diverged trial is not retried


def reported_metrics(result: dict) -> dict[str, float]:
    """The metrics a trial reported (Experiment.run_epoch's), without Ray's bookkeeping keys."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- the trainable

def train_trial(config: dict) -> None:
    """Tune function trainable: one trial = one Experiment, resumed from Tune's latest checkpoint.

    Every epoch is reported; a checkpoint (with the sample grids) goes with the evaluation
    epochs, whose results carry the objective that ranks checkpoints.
    """
    import torch  # here, not at the top: the driver imports this module without needing torch

    from trainables.experiment import Experiment
    from trainables.hardware import describe_hardware
    from trainables.training import DivergenceError

    cfg = TrialConfig.from_flat(config)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    _raise_if_diverged()
    exp = Experiment(cfg)
    hardware = describe_hardware(exp.device)  # a string beside the metrics; the tracker tags the run with it
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            exp.restore(directory)
    while exp.epoch < cfg.train.max_epochs:
        try:
            metrics = exp.run_epoch()
        except DivergenceError as err:
            _mark_diverged(str(err))
            raise
        if "sample_seconds" in metrics:  # an evaluation epoch (docs/architecture.md): it has the objective
            with tempfile.TemporaryDirectory() as directory:
                exp.save(directory)
                exp.write_sample_grids(directory)
                tune.report({**metrics, "hardware": hardware},
                            checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report({**metrics, "hardware": hardware})


def _trial_storage():
    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, f"{storage.trial_fs_path}/{DIVERGED_FILE}"


def _mark_diverged(reason: str) -> None:
    fs, path = _trial_storage()
    with fs.open_output_stream(path) as f:
        f.write(reason.encode())


def _raise_if_diverged() -> None:
    """A retry of a diverged trial would diverge again at the same step: fail at once instead."""
    import pyarrow.fs
    from trainables.training import DivergenceError

    fs, path = _trial_storage()
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        with fs.open_input_stream(path) as f:
            raise DivergenceError(f.read().decode() + " (not retried: the trial diverged before)")


# ---------------------------------------------------------------- search

class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records early-stopped trials as PRUNED and reports intermediate values by epoch.

    Ray's OptunaSearch tells every trial with a result as COMPLETE, so an ASHA-stopped
    trial enters TPE's history as a finished one with a part-trained value. Here a trial
    that ends before `max_epochs` is PRUNED (Optuna keeps its last intermediate value).
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or self.metric not in result:
            return  # multi-objective Optuna takes no intermediate values; non-evaluation epochs lack it
        reported = self.__dict__.setdefault("_reported_steps", set())  # a resumed trial repeats epochs
        if (trial_id, int(result["epoch"])) not in reported:
            self._ot_trials[trial_id].report(float(result[self.metric]), int(result["epoch"]))
            reported.add((trial_id, int(result["epoch"])))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if result and not error and trial_id not in self._completed_trials:
            if int(result.get("epoch", 0)) < int(result["config/max_epochs"]):
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna_state("PRUNED"))
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)

    def optuna_trial(self, trial_id: str) -> Optional[dict]:
        """Plain data of the Optuna trial behind a Tune trial: number, state, values, params."""
        if trial_id not in self._ot_trials:
            return None
        frozen = self._ot_study.get_trials(deepcopy=False)[self._ot_trials[trial_id].number]
        return {"number": frozen.number, "state": frozen.state.name, "values": frozen.values, "params": frozen.params}

    def optuna_history(self) -> list[dict]:
        trials = self._ot_study.get_trials(deepcopy=False)
        best = {t.number for t in self._ot_study.best_trials} if any(t.state.name == "COMPLETE" for t in trials) else set()
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
        open(checkpoint_path, "wb").close()

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

    def get_state(self) -> dict:
        return {"fixed": self.fixed, "fixed_ids": dict(self.fixed_ids)}

    def set_state(self, state: dict) -> None:
        self.fixed, self.fixed_ids = state["fixed"], dict(state["fixed_ids"])


class FixedTrialsExemptASHA(ASHAScheduler):
    """ASHA that never stops (or ranks) a space's fixed reference trials."""

    def __init__(self, searcher: FixedTrialsFirst, **kwargs):
        super().__init__(**kwargs)
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.searcher.is_fixed(trial.trial_id):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self.searcher.is_fixed(trial.trial_id):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


# ---------------------------------------------------------------- callbacks

class TrialEvents(tune.Callback):
    """Hands Tune's trial events, as plain data, to a listener (the study's MLflow tracker).

    The listener is duck-typed: trial_started(trial_id, config, fixed), trial_result(trial_id,
    metrics), trial_hardware(trial_id, description), trial_checkpoint(trial_id, directory), trial_retrying(trial_id, failures),
    trial_ended(trial_id, state, error, optuna, metrics), study_ended(optuna_history).
    """

    def __init__(self, listener, searcher: FixedTrialsFirst):
        self.listener, self.searcher = listener, searcher

    def on_trial_start(self, iteration, trials, trial, **info):
        self.listener.trial_started(trial.trial_id, _trial_config(trial), self.searcher.is_fixed(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.listener.trial_result(trial.trial_id, reported_metrics(result))
        if isinstance(result.get("hardware"), str):
            self.listener.trial_hardware(trial.trial_id, result["hardware"])

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        with checkpoint.as_directory() as directory:
            self.listener.trial_checkpoint(trial.trial_id, directory)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.listener.trial_retrying(trial.trial_id, trial.run_metadata.num_failures)

    def on_trial_complete(self, iteration, trials, trial, **info):
        metrics = reported_metrics(trial.last_result)
        finished = metrics.get("epoch", 0) >= trial.config["max_epochs"]
        self._ended(trial, "completed" if finished else "pruned", None, metrics)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "errored", _error_line(trial), reported_metrics(trial.last_result))

    def on_experiment_end(self, trials, **info):
        self.listener.study_ended(self.searcher.searcher.optuna_history())

    def _ended(self, trial, state: str, error: Optional[str], metrics: dict) -> None:
        optuna = self.searcher.searcher.optuna_trial(trial.trial_id)
        self.listener.trial_ended(trial.trial_id, state, error, optuna, metrics)
        self.listener.optuna_history(self.searcher.searcher.optuna_history())


class SchedulerState(tune.Callback):
    """Persists ASHA's rungs in Tune's experiment checkpoint: Tune saves searcher and callback
    state but not the scheduler's, so a resumed study would otherwise forget every rung."""

    def __init__(self, scheduler: FixedTrialsExemptASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {k: v for k, v in self.scheduler.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict) -> None:
        self.scheduler.__dict__.update(state)


def _trial_config(trial) -> dict:
    return {k: v for k, v in trial.config.items()}


def _error_line(trial) -> str:
    """The exception line ("DivergenceError: ...") out of Ray's error file."""
    path = trial.error_file
    if not path or not os.path.exists(path):
        return "trial failed (no error file)"
    return exception_line(open(path).read())


def exception_line(text: str) -> str:
    """The last "SomeError: message" line of a traceback, without the exception's module path."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt"))]
    line = (errors or lines or ["trial failed"])[-1]
    head, sep, rest = line.partition(":")
    return (head.rsplit(".", 1)[-1] + sep + rest)[:500]


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# ---------------------------------------------------------------- the Tuner

@dataclass(frozen=True)
class TuneSpec:
    name: str                    # experiment dir name under storage_path
    storage_path: str            # local path or URI
    param_space: dict            # flat TrialConfig values every trial shares
    distributions: dict          # searched key -> optuna distribution; {} searches nothing
    fixed_trials: tuple          # flat overrides of the trials run beside the search
    num_samples: int             # trials the searcher proposes
    objective: tuple             # metric names; two or more: multi-objective
    mode: tuple                  # "min" | "max" per objective
    scheduler: str               # "asha" | "fifo"
    grace_period: int            # ASHA: epochs before a trial can be stopped (the first evaluation)
    max_epochs: int              # ASHA's max_t
    seed: int                    # TPE seed
    n_startup_trials: int        # random trials before TPE models the history
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int          # 0: unlimited
    max_failures: int
    num_to_keep: int


def connect(address: Optional[str]) -> dict[str, float]:
    """Start a local Ray (address None) or join a cluster; returns its total resources.

    Trial stdout (per-epoch lines, sampling progress) stays in Ray's worker logs; the driver
    prints one line per trial event (study/progress.py) and Tune's errors."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _trainable(spec: TuneSpec):
    return tune.with_resources(train_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def build_tuner(spec: TuneSpec, listener) -> tune.Tuner:
    import optuna

    single = len(spec.objective) == 1
    if spec.distributions:
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials)
        inner = PruneAwareOptunaSearch(
            space=spec.distributions, metric=spec.objective[0] if single else list(spec.objective),
            mode=spec.mode[0] if single else list(spec.mode), sampler=sampler)
    else:
        inner = _NothingToSearch()
    searcher = FixedTrialsFirst(list(spec.fixed_trials), inner)
    callbacks = [TrialEvents(listener, searcher)]
    if spec.scheduler == "asha":
        scheduler = FixedTrialsExemptASHA(searcher, time_attr="epoch", metric=spec.objective[0], mode=spec.mode[0],
                                          max_t=spec.max_epochs, grace_period=spec.grace_period, reduction_factor=2)
        callbacks.append(SchedulerState(scheduler))
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples + len(spec.fixed_trials),
        max_concurrent_trials=spec.max_concurrent or None, reuse_actors=False, trial_dirname_creator=_trial_dirname)
    run_config = tune.RunConfig(
        name=spec.name, storage_path=spec.storage_path, callbacks=callbacks, verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep,
                                                checkpoint_score_attribute=spec.objective[0],
                                                checkpoint_score_order=spec.mode[0]))
    return tune.Tuner(_trainable(spec), param_space=dict(spec.param_space), tune_config=tune_config,
                      run_config=run_config)


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def restore_tuner(spec: TuneSpec, path: str) -> tune.Tuner:
    """Resume unfinished trials and retry errored ones from their latest checkpoints."""
    return tune.Tuner.restore(path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True)


def fit(tuner: tune.Tuner, objective: tuple, mode: tuple) -> list[dict]:
    """Run the study; one plain record per trial (config, last metrics, error, best checkpoint path)."""
    grid = tuner.fit()
    records = []
    for result in grid:
        best = None
        scored = [(ckpt, m) for ckpt, m in (result.best_checkpoints or []) if objective[0] in m]
        if scored:
            pick = min if mode[0] == "min" else max
            best = pick(scored, key=lambda cm: cm[1][objective[0]])[0].path
        records.append({
            "trial_id": result.metrics.get("trial_id") or os.path.basename(result.path).removeprefix("trial_"),
            "config": dict(result.config or {}), "metrics": reported_metrics(result.metrics or {}),
            "error": _first_line(result.error), "best_checkpoint": best, "path": result.path,
        })
    return records


def _first_line(error: Optional[BaseException]) -> Optional[str]:
    return None if error is None else exception_line(str(error) or type(error).__name__)


def local_checkpoint(path: str):
    """Context manager: a local directory holding the checkpoint at `path` (downloaded if remote)."""
    return tune.Checkpoint(path).as_directory()
