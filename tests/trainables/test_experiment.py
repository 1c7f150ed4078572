"""A trial resumed from its checkpoint continues exactly as if it had never stopped."""
import pytest
import torch

from trainables.checkpoint import CheckpointMismatchError, load_checkpoint, rng_state, save_checkpoint
from trainables.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from trainables.experiment import Experiment


def _cfg(kind="smoothed", noise_std=0.3, nr_filters=8, max_epochs=2):
    return TrialConfig(
        model=ModelConfig(nr_filters=nr_filters, nr_resnet=1, num_mixtures=2, dropout=0.2),
        data=DataConfig(noise_std=noise_std),
        train=TrainConfig(kind=kind, batch_size=128, max_epochs=max_epochs, ema_decay=0.9, seed=5),
        eval=EvalConfig(eval_every=100, num_eval_samples=4, bound_noise_draws=1, max_eval_images=64),
    )


@pytest.mark.parametrize("kind,noise_std", [("smoothed", 0.3), ("baseline", 0.0)])
def test_resume_gives_the_same_metrics_as_not_stopping(tmp_path, kind, noise_std):
    quiet = lambda message: None  # noqa: E731
    straight = Experiment(_cfg(kind, noise_std), log=quiet)
    expected = [straight.run_epoch() for _ in range(2)]

    first = Experiment(_cfg(kind, noise_std), log=quiet)
    first.run_epoch()
    first.save(tmp_path)
    torch.manual_seed(1234)  # whatever happened in between must not matter
    resumed = Experiment(_cfg(kind, noise_std), log=quiet)
    resumed.restore(tmp_path)
    assert resumed.epoch == 1
    final = resumed.run_epoch()
    timing = {"images_per_s", "epoch_seconds", "sample_seconds"}
    assert {k: v for k, v in final.items() if k not in timing} == {
        k: v for k, v in expected[1].items() if k not in timing}
    assert resumed.done
    assert "fd_digits_cnn" in final and ("fd_digits_cnn_twostep" in final) == (kind == "smoothed")
    grids = resumed.write_sample_grids(tmp_path / "grids")
    assert grids and all(p.stat().st_size > 0 for p in grids)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    Experiment(_cfg(nr_filters=8, max_epochs=1), log=lambda m: None).save(tmp_path)
    other = Experiment(_cfg(nr_filters=16, max_epochs=1), log=lambda m: None)
    with pytest.raises(CheckpointMismatchError, match="nr_filters: checkpoint 8 vs config 16"):
        other.restore(tmp_path)


def test_a_denoiser_checkpoint_of_the_stacked_design_is_refused_by_name(tmp_path):
    """Checkpoints written before the conditioning encoder (x~ stacked above x) lack the
    field; their denoiser weights would not fit, and the refusal names the field."""
    exp = Experiment(_cfg(max_epochs=1), log=lambda m: None)
    old_config = {k: v for k, v in exp.cfg.to_flat().items() if k != "denoiser_conditioning"}
    save_checkpoint(tmp_path, config=old_config, epoch=1, units={}, rng=rng_state())
    with pytest.raises(CheckpointMismatchError, match="denoiser_conditioning: checkpoint None vs config 'encoder'"):
        exp.restore(tmp_path)


def test_checkpoint_loads_with_weights_only_and_holds_the_config(tmp_path):
    exp = Experiment(_cfg(max_epochs=1), log=lambda m: None)
    exp.save(tmp_path)
    payload = load_checkpoint(tmp_path, config=exp.cfg.to_flat())  # torch.load(weights_only=True) inside
    assert payload["config"] == exp.cfg.to_flat()
    assert set(payload["units"]) == {"smoothed", "denoiser"}
    assert not list(tmp_path.glob(".checkpoint.pt.tmp*")), "no temporary file left behind"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing", config=exp.cfg.to_flat())
