"""Connecting to Ray, building, restoring and fitting the Tuner of a study."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from trainables.tune.data_parallel import data_parallel_trainable
from trainables.tune.events import TrialEvents, attach_driver
from trainables.tune.listener import TrialListener
from trainables.tune.progress import StudyProgress
from trainables.tune.repeats import SeededRepeater
from trainables.tune.results import exception_line, reported_metrics
from trainables.tune.scheduler import FixedTrialsExemptASHA, SchedulerState
from trainables.tune.search import FixedTrialsFirst, OptunaSearcher, _NothingToSearch
from trainables.tune.trainable import train_trial

# Set in the driver process before Tune reads them (connect), not at import time:
DRIVER_ENVIRONMENT = {
    # The objective exists only at evaluation epochs; Tune's strict check wants every metric in
    # every result. Schedulers and searchers here skip results without it (ASHA does natively).
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # The driver prints one line per trial event (study/progress.py); Tune's legacy output engine
    # at verbose=0 stays silent (the new one still prints its banners and a TensorBoard hint).
    "RAY_AIR_NEW_OUTPUT": "0",
}


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


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
    optuna_storage: Optional[str] = None  # Optuna RDB URL (sqlite:///<study dir>/optuna.db); None: in memory
    workers_per_trial: int = 1   # > 1: each trial is a Ray Train DDP run of this many workers, each
                                 # holding cpus_per_trial CPUs and gpus_per_trial GPUs (data_parallel.py)
    repeats: int = 1             # Tune trials (seeds seed, seed + 1, ...) per configuration (repeats.py)

    @property
    def total_trials(self) -> int:
        """Tune trials in all: every configuration (searched and fixed) `repeats` times."""
        return self.repeats * (self.num_samples + len(self.fixed_trials))


def connect(address: Optional[str]) -> dict[str, float]:
    """Start a fresh local Ray of this process (address None: never a stale cluster that
    /tmp/ray/ray_current_cluster names) or join a cluster (`auto`, host:port); returns its resources.

    Trial stdout (per-epoch lines, sampling progress) stays in Ray's worker logs; the driver
    prints one line per trial event (study/progress.py) and Tune's errors."""
    for key, value in DRIVER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if address and address.startswith("ray://"):
        raise ValueError(f"--address {address}: Ray Client (ray://) is not supported: trial events must reach "
                         "the driver; run the study on a node of the cluster with --address auto")
    if not ray.is_initialized():
        context = ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                           logging_level="WARNING")
        info = getattr(context, "address_info", None) or {}
        LOCAL_RAY["session_dir"] = info.get("session_dir") if not address else None
    return {k: float(v) for k, v in ray.cluster_resources().items()}


LOCAL_RAY: dict = {"session_dir": None}  # the session directory of the Ray that connect() started here


def local_session_dir() -> Optional[str]:
    """The session directory of the local Ray this process started (ray.init's public `address_info`),
    None when it joined a cluster or started none: where study/recovery/leftovers.py finds its processes."""
    return LOCAL_RAY["session_dir"] if ray.is_initialized() else None


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _trainable(spec: TuneSpec):
    if spec.workers_per_trial > 1:
        return data_parallel_trainable(spec.workers_per_trial, spec.cpus_per_trial, spec.gpus_per_trial)
    return tune.with_resources(train_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def _quiet_optuna() -> None:
    """Optuna logs "A new study created in memory/RDB with name: ..." at INFO; the study prints its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fresh_optuna_storage(spec: TuneSpec):
    """The RDB storage with no study of this name: a Tuner built anew (nothing Tune could restore) searches
    anew, so trials an attempt killed before Tune's first checkpoint left there must not seed TPE."""
    import optuna

    if not spec.optuna_storage:
        return None
    storage = optuna.storages.RDBStorage(spec.optuna_storage)
    try:
        optuna.delete_study(study_name=spec.name, storage=storage)
    except KeyError:
        pass
    return storage


def build_tuner(spec: TuneSpec, listener: TrialListener, progress=None) -> tune.Tuner:
    """A new Tuner: the searcher, the scheduler, and the callbacks: trial events to `listener`
    (TrialEvents), the study's status to `progress.study_progress(status)` at each trial event
    and at least every minute (trainables/tune/progress.py)."""
    import optuna

    _quiet_optuna()
    single = len(spec.objective) == 1
    if spec.distributions:
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials)
        inner = OptunaSearcher(
            space=spec.distributions, metric=spec.objective[0] if single else list(spec.objective),
            mode=spec.mode[0] if single else list(spec.mode), sampler=sampler,
            storage=_fresh_optuna_storage(spec), study_name=spec.name)
    else:
        inner = _NothingToSearch()
    searcher = SeededRepeater(FixedTrialsFirst(list(spec.fixed_trials), inner), spec.repeats, spec.seed)
    total = spec.total_trials
    callbacks = [TrialEvents(searcher, spec.name),
                 StudyProgress(total, spec.max_epochs, spec.objective[0], spec.mode[0], spec.name)]
    if spec.scheduler == "asha":
        scheduler = FixedTrialsExemptASHA(searcher, time_attr="epoch", metric=spec.objective[0], mode=spec.mode[0],
                                          max_t=spec.max_epochs, grace_period=spec.grace_period, reduction_factor=2)
        callbacks.append(SchedulerState(scheduler))
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=total,
        max_concurrent_trials=spec.max_concurrent or None, reuse_actors=False, trial_dirname_creator=_trial_dirname)
    run_config = tune.RunConfig(
        name=spec.name, storage_path=spec.storage_path, callbacks=callbacks, verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep,
                                                checkpoint_score_attribute=spec.objective[0],
                                                checkpoint_score_order=spec.mode[0]))
    tuner = tune.Tuner(_trainable(spec), param_space=dict(spec.param_space), tune_config=tune_config,
                       run_config=run_config)
    attach_driver(spec.name, listener, progress, total)
    return tuner


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def repair_checkpoints(path: str, log) -> list[str]:
    """Before a restore: trials whose saved latest checkpoint a kill left pruned resume from their
    newest complete one (checkpoint_repair.py); the lines logged."""
    from trainables.tune.checkpoint_repair import repair_experiment_state

    return repair_experiment_state(path, log)


def restore_tuner(spec: TuneSpec, path: str, listener: TrialListener, progress=None) -> tune.Tuner:
    """The study's Tuner from `path`: unfinished trials resume and errored ones retry from their
    latest checkpoints; new trials are created until the spec's total exists (a study extended by
    a larger --num-samples, extend.py). Tune restores the callbacks from tuner.pkl, the TrialEvents
    without a listener (it is never pickled); this process's `listener` is registered for them here
    (events.attach_driver), and Tune's `setup` hook hands it over when the fit starts."""
    from trainables.tune.extend import extend_restored
    from trainables.tune.reconcile_search import restored_trials

    _quiet_optuna()
    tuner = tune.Tuner.restore(path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True)
    total = spec.total_trials
    extend_restored(tuner, total, restored_trials(path))
    attach_driver(spec.name, listener, progress, total)
    return tuner


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


def local_checkpoint(path: str, storage_path: Optional[str] = None):
    """Context manager: a local directory holding the checkpoint at `path` (downloaded if remote).

    Tune's results name a checkpoint by its path on the storage filesystem, without a scheme
    (`bucket/dir/study/trial_x/checkpoint_000001`); `storage_path` (the study's --storage-path URI,
    query included) says which filesystem that is."""
    filesystem = None
    if storage_path and "://" in storage_path and not storage_path.startswith("file://"):
        import pyarrow.fs

        filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage_path)
    return tune.Checkpoint(path, filesystem=filesystem).as_directory()
