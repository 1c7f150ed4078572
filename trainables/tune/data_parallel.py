"""Data-parallel trials: the Tune trial drives a Ray Train TorchTrainer (DDP) and relays its results.

Ray 2.60's supported pattern for Train inside Tune (docs: train/user-guides/
hyperparameter-optimization, "Train V2"): the Tune function trainable builds a TorchTrainer
and calls `fit()`; the Train workers run `trainables.experiment.Experiment` with the
`trainables.distributed.Shard` of their process group. Tune, Optuna, ASHA and MLflow see one
trial as before, because:

- rank 0 reports every epoch (the others report nothing) and checkpoints at evaluations;
- a Train callback on Train's controller hands each report (metrics, checkpoint path) through
  a Ray queue to this trial function, which reports it to Tune *with* the checkpoint
  (`TuneReportCallback` relays metrics only; Tune's checkpoints are what ranks checkpoints,
  logs sample grids to MLflow and resumes trials here, as for one-worker trials);
- Tune's checkpoint is the one source of truth: a retry or a resumed study passes it to the
  workers (in `train_loop_config`, Train V2's replacement of `resume_from_checkpoint`) and
  every rank restores it. Train itself does not retry (FailureConfig(max_failures=0)): a
  failed worker fails the trial, and Tune retries it `--max-failures` times from its latest
  checkpoint, the policy of one-worker trials. Each attempt is a fresh Train run (its own
  name), so Train never restores a run of its own;
- `fit()` runs in a Ray task the trial owns; a trial that Tune stops (ASHA) removes its
  workers' placement group and cancels that task, so the workers are free at once.

The trial process itself holds no CPU (it waits on the queue): it asks Tune for a little
memory only, so that N workers of C CPUs fit on a cluster of N x C CPUs.
"""
from __future__ import annotations

import tempfile
import time

import ray
import ray.train
from ray import tune

from trainables.config import TrialConfig

DRIVER_MEMORY = 256 * 2**20  # bytes of Ray's logical "memory" resource the trial process asks for
COLLECTIVE_TIMEOUT_S = 4 * 3600  # ranks 1..N-1 wait in an all-reduce while rank 0 evaluates


def data_parallel_trainable(workers: int, cpus_per_worker: float, gpus_per_worker: float):
    """The Tune trainable of trials with `workers` DDP workers, each holding these resources."""

    def data_parallel_trial(config: dict) -> None:
        _drive(config, workers, cpus_per_worker, gpus_per_worker)

    return tune.with_resources(data_parallel_trial, {"cpu": 0, "memory": DRIVER_MEMORY})


def _drive(config: dict, workers: int, cpus: float, gpus: float) -> None:
    """Run one trial's TorchTrainer to its end, reporting rank 0's results to Tune as they come."""
    from ray.train.torch import TorchConfig
    from ray.util.queue import Queue

    from trainables.tune.trainable import raise_if_diverged

    cfg = TrialConfig.from_flat(config)
    if cfg.train.workers_per_trial != workers:
        raise ValueError(f"trial asks workers_per_trial={cfg.train.workers_per_trial}, the Tuner runs {workers}")
    raise_if_diverged()
    storage = tune.get_context().get_storage()
    _remove_attempts(storage.storage_filesystem, storage.trial_fs_path)  # of attempts that failed or were stopped
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})  # maxsize 1: Train waits until Tune took a result
    previous = tune.get_checkpoint()
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    attempt = f"ddp_attempt_{time.time_ns()}"  # a fresh Train run per attempt: it never restores itself
    trainer_kwargs = dict(
        train_loop_config={"trial": dict(config), "threads": max(1, int(cpus)), "restore": previous, "queue": queue},
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo", timeout_s=COLLECTIVE_TIMEOUT_S),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=attempt, storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem, callbacks=[_RelayToTune(queue)],
            failure_config=ray.train.FailureConfig(max_failures=0, max_preemption_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
    fit = _fit.options(max_retries=0).remote(trainer_kwargs, queue)  # a task this trial owns
    placement_group = []  # the workers', sent by rank 0
    try:
        _relay_results(queue, placement_group)
    except BaseException:  # Tune stopped the trial (ASHA, a stopper) in report(), or reporting failed
        _abort(placement_group, fit)
        raise
    error = ray.get(fit)
    _remove(storage.storage_filesystem, f"{storage.trial_fs_path}/{attempt}")
    if error is not None:
        raise _trial_error(error)


@ray.remote(num_cpus=0)
def _fit(trainer_kwargs: dict, queue):
    """TorchTrainer.fit(); returns its exception (None if it ended well). The queue's last item
    (None) tells the trial that no more results come."""
    from ray.train.torch import TorchTrainer

    try:
        TorchTrainer(_worker_loop, **trainer_kwargs).fit()
        return None
    except Exception as err:  # returned, not raised: the trial inspects Train's worker failures
        return err
    finally:
        queue.put(None)


def _relay_results(queue, placement_group: list) -> None:
    """Report each (metrics, checkpoint path) that rank 0 reported to Tune, checkpoint included."""
    while (item := queue.get(block=True)) is not None:
        if item[0] == "placement_group":
            placement_group.append(item[1])
            continue
        _, metrics, path, filesystem = item
        if path is None:
            tune.report(metrics)
            continue
        with ray.train.Checkpoint(path, filesystem).as_directory() as directory:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _abort(placement_group: list, fit) -> None:
    """End a stopped trial's Train run at once: removing the workers' placement group ends the
    workers; cancelling the task ends Train's controller. (Train's own cleaner of a dead
    controller's placement group needs the dashboard's State API, which a local study lacks,
    and this process may be gone before a graceful abort finished.)"""
    from ray.util import remove_placement_group

    for group in placement_group:
        try:
            remove_placement_group(group)
        except Exception:  # already removed
            pass
    ray.cancel(fit, force=True)


def _remove_attempts(filesystem, trial_path: str) -> None:
    import pyarrow.fs

    found = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
    for info in found:
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("ddp_attempt_"):
            _remove(filesystem, info.path)


def _remove(filesystem, run_path: str) -> None:
    """Train's copy of the checkpoints is redundant once Tune holds them."""
    try:
        filesystem.delete_dir(run_path)
    except OSError:  # never created, or already gone
        pass


def _trial_error(err: BaseException) -> BaseException:
    """A worker's DivergenceError becomes the trial's own (marked, so that it is not retried);
    other failures pass through as Train raised them."""
    from trainables.training import DivergenceError
    from trainables.tune.trainable import mark_diverged

    message = divergence_message(err)
    if message is None:
        return err
    mark_diverged(message)
    return DivergenceError(message)


def divergence_message(err: BaseException):
    """"loss is nan at epoch E, step S" when a worker of Train's WorkerGroupError diverged, else None.

    Every rank checks the same all-reduced loss, so all of them raise it; a worker's exception
    may come wrapped (RayTaskError), hence the match on its text too."""
    from trainables.training import DivergenceError

    for failure in (getattr(err, "worker_failures", None) or {}).values():
        text = str(failure)
        if isinstance(failure, DivergenceError) or "DivergenceError" in text:
            lines = [ln for ln in text.splitlines() if ln.strip()] or ["loss diverged"]
            line = next((ln for ln in lines if "loss is" in ln), lines[-1])
            return line.split("DivergenceError:", 1)[-1].strip()
    return None


def _worker_loop(loop_config: dict) -> None:
    """One Train worker: an Experiment on this rank's shard; rank 0 reports and checkpoints."""
    import ray.train.torch
    import torch

    from trainables.distributed import Shard
    from trainables.experiment import Experiment
    from trainables.hardware import describe_hardware
    from trainables.tune.trainable import evaluation_extractor_tags, write_checkpoint_metrics

    torch.set_num_threads(loop_config["threads"])
    cfg = TrialConfig.from_flat(loop_config["trial"])
    shard = Shard.from_process_group()
    if shard.is_main:  # the trial frees it at once when Tune stops the trial
        loop_config["queue"].put(("placement_group", ray.util.get_current_placement_group()))
    device = ray.train.torch.get_device()
    exp = Experiment(cfg, device=device, shard=shard)
    # Tune's latest (Train's resume_from_checkpoint is deprecated); Train's own only if it ever retried
    checkpoint = ray.train.get_checkpoint() or loop_config["restore"]
    if checkpoint:  # every rank restores the same state
        with checkpoint.as_directory() as directory:
            exp.restore(directory)
    hardware = f"{describe_hardware(device)}; {shard.world_size} DDP workers"
    extractor: dict[str, str] = {}  # rank 0's extractor_sha/_accuracy tags, from its first evaluation on
    while not exp.done:
        metrics = exp.run_epoch()
        if shard.is_main and "sample_seconds" in metrics:  # an evaluation epoch: checkpoint with grids
            extractor = extractor or evaluation_extractor_tags(cfg)
            with tempfile.TemporaryDirectory() as directory:
                exp.save(directory)
                exp.write_sample_grids(directory)
                reported = {**metrics, "hardware": hardware, **extractor}
                write_checkpoint_metrics(directory, reported)
                ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report({**metrics, "hardware": hardware, **extractor} if shard.is_main else {})


class _RelayToTune(ray.train.UserCallback):
    """Ray Train callback (runs on Train's controller): rank 0's report -> the trial's queue."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        self.queue.put(("result", dict(metrics[0]), checkpoint.path if checkpoint else None,
                        checkpoint.filesystem if checkpoint else None), block=True)
