"""The data-parallel trial's handling of worker failures (its end-to-end run: tests/study/test_data_parallel_study.py)."""
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
