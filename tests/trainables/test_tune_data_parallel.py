"""Data-parallel trials on Ray Train: worker failures, and stopped trials that free their workers
(the end-to-end study with a killed worker: tests/study/test_data_parallel_study.py)."""
import pytest
from ray.train import WorkerGroupError

from trainables.training import DivergenceError
from trainables.tune.data_parallel import divergence_message


def test_a_diverged_worker_names_the_epoch_and_step_other_failures_pass():
    err = WorkerGroupError("rank 0 failed", {0: DivergenceError("loss is nan at epoch 3, step 7"),
                                             1: DivergenceError("loss is nan at epoch 3, step 7")})
    assert divergence_message(err) == "loss is nan at epoch 3, step 7"
    wrapped = RuntimeError("Traceback ...\ntrainables.training.DivergenceError: loss is inf at epoch 1, step 2\n")
    assert divergence_message(WorkerGroupError("x", {1: wrapped})) == "loss is inf at epoch 1, step 2"
    assert divergence_message(WorkerGroupError("x", {0: RuntimeError("Connection reset by peer")})) is None
    assert divergence_message(ValueError("not a Train error")) is None


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_stopped_two_worker_trial_frees_its_workers_for_the_next(tmp_path):
    """Tune stops each trial after epoch 1 (as ASHA would): the second trial's workers can only
    start once the first trial's are gone (2 CPUs, 2 workers of 1 CPU each)."""
    import os

    import ray
    from ray import tune

    from trainables.tune.data_parallel import data_parallel_trainable

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trial = {"dataset": "digits", "kind": "smoothed", "noise_std": 0.3, "nr_filters": 8, "nr_resnet": 1,
             "num_mixtures": 3, "batch_size": 128, "eval_every": 1, "num_eval_samples": 16, "max_eval_images": 64,
             "bound_noise_draws": 1, "workers_per_trial": 2, "max_epochs": 6}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        tuner = tune.Tuner(data_parallel_trainable(2, 1.0, 0.0), param_space=trial,
                           tune_config=tune.TuneConfig(num_samples=2, reuse_actors=False),
                           run_config=tune.RunConfig(name="stop", storage_path=str(tmp_path), verbose=0,
                                                     stop={"epoch": 1}))
        results = list(tuner.fit())
    finally:
        ray.shutdown()
    assert [r.metrics["epoch"] for r in results] == [1, 1] and all(r.error is None for r in results)
    assert all(r.checkpoint is not None for r in results)
