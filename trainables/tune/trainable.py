"""The function trainable: one Tune trial = one Experiment, resumed from Tune's latest checkpoint."""
from __future__ import annotations

import json
import os
import tempfile

from ray import tune

from trainables.config import TrialConfig
from trainables.tune.checkpoint_repair import METRICS_FILE

DIVERGED_FILE = "diverged.txt"  # in the trial's storage dir: a diverged trial is not retried


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
    raise_if_diverged()
    exp = Experiment(cfg)
    hardware = describe_hardware(exp.device)  # a string beside the metrics; the tracker tags the run with it
    extractor: dict[str, str] = {}  # extractor_sha/_accuracy, known from the first evaluation on (tagged too)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            exp.restore(directory)
    while exp.epoch < cfg.train.max_epochs:
        try:
            metrics = exp.run_epoch()
        except DivergenceError as err:
            mark_diverged(str(err))
            raise
        if "sample_seconds" in metrics:  # an evaluation epoch (docs/architecture.md): it has the objective
            extractor = extractor or evaluation_extractor_tags(cfg)
            with tempfile.TemporaryDirectory() as directory:
                exp.save(directory)
                exp.write_sample_grids(directory)
                reported = {**metrics, "hardware": hardware, **extractor}
                write_checkpoint_metrics(directory, reported)
                tune.report(reported, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report({**metrics, "hardware": hardware, **extractor})


def evaluation_extractor_tags(cfg: TrialConfig) -> dict[str, str]:
    """Tags naming the exact feature extractor of the trial's distances (its weights' sha, a classifier's
    test accuracy): one id such as mnist_cnn may be another network on another node or training split."""
    from trainables.quality.extractors import trial_extractor_tags

    return trial_extractor_tags(cfg.eval.extractor, cfg.data.dataset, data_dir=cfg.data.data_dir,
                                inception_weights=cfg.eval.inception_weights or None)


def write_checkpoint_metrics(directory: str, metrics: dict) -> None:
    """The reported metrics beside the checkpoint: what a resume needs to rank a checkpoint that
    Tune's saved state does not know yet (checkpoint_repair.py)."""
    with open(os.path.join(directory, METRICS_FILE), "w") as f:
        json.dump(metrics, f, default=str)


def _trial_storage():
    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, f"{storage.trial_fs_path}/{DIVERGED_FILE}"


def mark_diverged(reason: str) -> None:
    fs, path = _trial_storage()
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # a trial that diverges before its first report has none yet
    with fs.open_output_stream(path) as f:
        f.write(reason.encode())


def raise_if_diverged() -> None:
    """A retry of a diverged trial would diverge again at the same step: fail at once instead."""
    import pyarrow.fs
    from trainables.training import DivergenceError

    fs, path = _trial_storage()
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        with fs.open_input_stream(path) as f:
            raise DivergenceError(f.read().decode() + " (not retried: the trial diverged before)")
