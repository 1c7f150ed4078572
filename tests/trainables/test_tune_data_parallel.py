"""Data-parallel trials on Ray Train inside Tune (2 gloo workers on CPU): one Tune trial as before,
the metrics of one process, and a killed worker resumes the trial from its checkpoint."""
import os
import signal
from pathlib import Path

import pytest
import ray
from ray import tune

from trainables.config import TrialConfig
from trainables.experiment import Experiment
from trainables.tune.data_parallel import data_parallel_trainable

pytestmark = pytest.mark.slow

TRIAL = {"dataset": "digits", "kind": "smoothed", "noise_std": 0.3, "nr_filters": 8, "nr_resnet": 1,
         "num_mixtures": 3, "batch_size": 128, "eval_every": 1, "num_eval_samples": 16, "max_eval_images": 64,
         "bound_noise_draws": 1, "workers_per_trial": 2}


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _descendants(pid: int) -> list[int]:
    """Processes below `pid` (this test's own local Ray), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


class KillAWorkerAfterFirstCheckpoint(tune.Callback):
    def __init__(self):
        self.killed, self.recovered = [], []

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered.append(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.killed:
            return
        for pid in _descendants(os.getpid()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "RayTrainWorker" in cmdline:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
                return


def _fit(tmp_path, name, max_epochs, callbacks=(), max_failures=0):
    tuner = tune.Tuner(
        data_parallel_trainable(2, 1.0, 0.0), param_space={**TRIAL, "max_epochs": max_epochs},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=False),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0, callbacks=list(callbacks),
                                  failure_config=tune.FailureConfig(max_failures=max_failures)))
    (result,) = tuner.fit()
    return result


def test_a_two_worker_trial_is_one_tune_trial_with_one_process_metrics_and_survives_a_killed_worker(
        local_ray, tmp_path):
    killer = KillAWorkerAfterFirstCheckpoint()
    result = _fit(tmp_path, "ddp", max_epochs=4, callbacks=[killer], max_failures=1)
    assert killer.killed, "no Ray Train worker found to kill"
    assert killer.recovered, "the trial was not retried"
    assert result.error is None and result.metrics["epoch"] == 4
    history = result.metrics_dataframe
    epochs = list(history["epoch"])
    # the retry restored a checkpoint (epoch >= 1) on every rank: it never trains epoch 1 again
    assert epochs.count(1) == 1 and epochs[-1] == 4, epochs
    assert "2 DDP workers" in result.metrics["hardware"]
    assert not list(Path(result.path).glob("ddp_attempt_*"))  # Train's copies removed; Tune holds the checkpoints
    with result.checkpoint.as_directory() as directory:
        assert (Path(directory) / "checkpoint.pt").exists() and list(Path(directory).glob("samples_*.png"))
    # rank 0 reported the global batch's numbers: those of one process on the same batches
    first = history[history["epoch"] == 1].iloc[0]
    one = Experiment(TrialConfig.from_flat({**TRIAL, "workers_per_trial": 1, "max_epochs": 4}), device="cpu",
                     log=lambda m: None).run_epoch()
    for key in ("train_bpd_smoothed", "train_bpd_denoiser", "test_bpd_smoothed", "bpd_bound"):
        assert first[key] == pytest.approx(one[key], abs=1e-4), key
