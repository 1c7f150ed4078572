"""A saved Tune state whose latest checkpoint Tune pruned before a kill resumes from the newest
complete checkpoint: the state is built and pruned by Tune's own checkpoint manager, and a
real Tuner restores from the repaired state."""
import json
import os
import shutil

import pyarrow.fs
import pytest
import torch
from ray.train import CheckpointConfig
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.tune.trainable.metadata import _TrainingRunMetadata

from trainables.tune.checkpoint_repair import METRICS_FILE, newest_complete_checkpoint, repair_experiment_state
from trainables.tune.internals import training_result

FS = pyarrow.fs.LocalFileSystem()
STATE = "experiment_state-2026-01-01_00-00-00.json"


def _write_checkpoint(trial_dir, index: int, fd: float, *, cut: bool = False) -> str:
    path = os.path.join(trial_dir, f"checkpoint_{index:06d}")
    os.makedirs(path)
    torch.save({"epoch": index, "weights": torch.zeros(1000)}, os.path.join(path, "checkpoint.pt"))
    if cut:  # a copy the kill interrupted: the zip's central directory (at the end) is missing
        size = os.path.getsize(os.path.join(path, "checkpoint.pt"))
        os.truncate(os.path.join(path, "checkpoint.pt"), size // 2)
    with open(os.path.join(path, METRICS_FILE), "w") as f:
        json.dump({"epoch": index, "fd": fd}, f)
    return path


def _manager() -> _CheckpointManager:
    return _CheckpointManager(CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="fd",
                                               checkpoint_score_order="min"))


def _save_state(experiment_dir, manager) -> str:
    metadata = _TrainingRunMetadata()
    metadata.checkpoint_manager = manager
    path = os.path.join(experiment_dir, STATE)
    with open(path, "w") as f:
        json.dump({"trial_data": [["{}", metadata.get_json_state()]], "runner_data": {}, "stats": {}}, f)
    return path


def _restored_manager(state_path) -> _CheckpointManager:
    with open(state_path) as f:
        return _TrainingRunMetadata.from_json_state(json.load(f)["trial_data"][0][1]).checkpoint_manager


@pytest.fixture
def pruned_before_kill(tmp_path):
    """State saved with checkpoint 0 as the latest; then Tune registered a better checkpoint 1
    and deleted 0 (num_to_keep=1), and the driver died before it saved the state again."""
    trial_dir = str(tmp_path / "trial_a")
    manager = _manager()
    manager.register_checkpoint(training_result(_write_checkpoint(trial_dir, 0, fd=5.0), FS, {"fd": 5.0}))
    state_path = _save_state(str(tmp_path), manager)
    manager.register_checkpoint(training_result(_write_checkpoint(trial_dir, 1, fd=3.0), FS, {"fd": 3.0}))
    assert not os.path.exists(os.path.join(trial_dir, "checkpoint_000000")), "Tune's manager pruned it"
    return tmp_path, trial_dir, state_path


def test_the_newest_complete_checkpoint_becomes_the_latest(pruned_before_kill):
    experiment_dir, trial_dir, state_path = pruned_before_kill
    lines = []
    assert len(repair_experiment_state(str(experiment_dir), lines.append)) == 1
    assert "checkpoint_000000 is gone" in lines[0] and "resuming from checkpoint_000001" in lines[0]
    manager = _restored_manager(state_path)
    assert manager.latest_checkpoint_result.checkpoint.path == os.path.join(trial_dir, "checkpoint_000001")
    assert manager.latest_checkpoint_result.metrics == {"epoch": 1, "fd": 3.0}
    assert [r.checkpoint.path for r in manager.best_checkpoint_results] == [os.path.join(trial_dir, "checkpoint_000001")]
    assert repair_experiment_state(str(experiment_dir), lines.append) == [], "a repaired state needs nothing more"


def test_a_cut_checkpoint_is_passed_over(pruned_before_kill):
    experiment_dir, trial_dir, state_path = pruned_before_kill
    _write_checkpoint(trial_dir, 2, fd=1.0, cut=True)
    os.makedirs(os.path.join(trial_dir, "checkpoint_000003"))  # created, nothing copied yet
    repair_experiment_state(str(experiment_dir), lambda line: None)
    assert _restored_manager(state_path).latest_checkpoint_result.checkpoint.path.endswith("checkpoint_000001")


def test_no_complete_checkpoint_left_restarts_the_trial(pruned_before_kill):
    experiment_dir, trial_dir, state_path = pruned_before_kill
    shutil.rmtree(os.path.join(trial_dir, "checkpoint_000001"))
    lines = []
    repair_experiment_state(str(experiment_dir), lines.append)
    assert "no complete one is left: the trial restarts" in lines[0]
    manager = _restored_manager(state_path)
    assert manager.latest_checkpoint_result is None and manager.best_checkpoint_results == []


def test_a_state_whose_checkpoints_exist_is_left_byte_for_byte(tmp_path):
    manager = _manager()
    manager.register_checkpoint(training_result(_write_checkpoint(str(tmp_path / "t"), 0, fd=5.0), FS, {"fd": 5.0}))
    state_path = _save_state(str(tmp_path), manager)
    before = open(state_path, "rb").read()
    assert repair_experiment_state(str(tmp_path), lambda line: None) == []
    assert open(state_path, "rb").read() == before


def test_newest_complete_checkpoint_needs_metrics_from_its_file_or_tunes_state(tmp_path):
    trial_dir = str(tmp_path)
    _write_checkpoint(trial_dir, 0, fd=2.0)
    legacy = _write_checkpoint(trial_dir, 1, fd=1.0)
    os.remove(legacy + "/" + METRICS_FILE)  # written by a release before metrics.json
    path, metrics = newest_complete_checkpoint(FS, trial_dir)
    assert path.endswith("checkpoint_000000") and metrics["fd"] == 2.0
    path, metrics = newest_complete_checkpoint(FS, trial_dir, known={legacy: {"fd": 1.0}})
    assert path == legacy and metrics == {"fd": 1.0}


def _trainable(config):
    """Two checkpoints, then a failure on the first run; on resume, report where it restored from."""
    import tempfile

    from ray import tune

    from trainables.tune.trainable import write_checkpoint_metrics

    restored = tune.get_checkpoint()
    if restored is not None:
        tune.report({"fd": 0.0, "restored_from": os.path.basename(restored.path)})
        return
    for index, fd in enumerate((5.0, 3.0)):
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"epoch": index}, os.path.join(directory, "checkpoint.pt"))
            write_checkpoint_metrics(directory, {"fd": fd, "epoch": index})
            tune.report({"fd": fd, "epoch": index}, checkpoint=tune.Checkpoint.from_directory(directory))
    raise RuntimeError("killed")


@pytest.mark.slow
def test_tune_resumes_from_the_repaired_state(tmp_path):
    """A real Tuner: its trial errors after two checkpoints; the state is then made the one a
    kill between pruning and saving leaves (latest checkpoint gone, a newer complete one on
    storage). Tune alone ends the trial ERROR on restore; after the repair it resumes from the newer one."""
    import ray
    from ray import tune

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(_trainable, run_config=tune.RunConfig(
            name="exp", storage_path=str(tmp_path), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="fd",
                                                    checkpoint_score_order="min"))).fit()
        experiment_dir = tmp_path / "exp"
        (trial_dir,) = [p for p in experiment_dir.iterdir() if p.is_dir() and p.name.startswith("_trainable")]
        latest = sorted(trial_dir.glob("checkpoint_*"))[-1]
        newer = trial_dir / f"checkpoint_{int(latest.name.split('_')[1]) + 1:06d}"
        shutil.copytree(latest, newer)
        shutil.rmtree(latest)
        repair_experiment_state(str(experiment_dir), lambda line: None)
        grid = tune.Tuner.restore(str(experiment_dir), trainable=_trainable, resume_errored=True).fit()
        assert grid[0].error is None
        assert grid[0].metrics["restored_from"] == newer.name
    finally:
        ray.shutdown()
