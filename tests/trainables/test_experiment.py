"""A trial resumed from its checkpoint continues exactly as if it had never stopped."""
import pytest
import torch

from search_spaces.metric_names import diagnostic_names
from trainables.checkpoint import CheckpointMismatchError, load_checkpoint, rng_state, save_checkpoint
from trainables.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from trainables.experiment import Experiment


# Training images of the tests that train (of 1438): an epoch of 2 batches, the last one short,
# resumes and evaluates as a full epoch does, in a fraction of the time.
TRAIN_SUBSET = 200


def _cfg(kind="smoothed", noise_std=0.3, nr_filters=8, max_epochs=2, train_subset=0):
    return TrialConfig(
        model=ModelConfig(nr_filters=nr_filters, nr_resnet=1, num_mixtures=2, dropout=0.2),
        data=DataConfig(noise_std=noise_std, train_subset=train_subset),
        train=TrainConfig(kind=kind, batch_size=128, max_epochs=max_epochs, ema_decay=0.9, seed=5),
        eval=EvalConfig(eval_every=100, num_eval_samples=4, bound_noise_draws=1, max_eval_images=64),
    )


# the smoothed trial (two models, diagnostics: ~5 CPU-s) is slow; the baseline's resume runs fast
@pytest.mark.parametrize("kind,noise_std", [pytest.param("smoothed", 0.3, marks=pytest.mark.slow), ("baseline", 0.0)])
def test_resume_gives_the_same_metrics_as_not_stopping(tmp_path, kind, noise_std):
    quiet = lambda message: None  # noqa: E731
    cfg = _cfg(kind, noise_std, train_subset=TRAIN_SUBSET)
    straight = Experiment(cfg, log=quiet)
    expected = [straight.run_epoch() for _ in range(2)]

    first = Experiment(cfg, log=quiet)
    first.run_epoch()
    first.save(tmp_path)
    torch.manual_seed(1234)  # whatever happened in between must not matter
    resumed = Experiment(cfg, log=quiet)
    resumed.restore(tmp_path)
    assert resumed.epoch == 1
    final = resumed.run_epoch()
    timing = {"images_per_s", "epoch_seconds", "sample_seconds", "bpd_seconds", "feature_seconds",
              *(("diagnostic_seconds",) if kind == "smoothed" else ())}
    assert {k: v for k, v in final.items() if k not in timing} == {
        k: v for k, v in expected[1].items() if k not in timing}
    assert resumed.done
    assert all(final[k] > 0 for k in timing)  # an evaluation's time split: sampling, bits/dim, features
    assert "fd_digits_cnn" in final and ("fd_digits_cnn_twostep" in final) == (kind == "smoothed")
    samplers = ("onestep", "twostep") if kind == "smoothed" else ("direct",)
    expected_names = {f"{m}{s}{se}" for m in ("fd_digits_cnn", "is_digits_cnn") for s in ("", *(f"_{x}" for x in samplers))
                      for se in ("", "_se")}
    if kind == "smoothed":  # the diagnostics (quality/diagnostics.py), distances only
        expected_names |= {f"{n}{se}" for n in diagnostic_names("digits_cnn").values() for se in ("", "_se")}
    assert {k for k in final if k.startswith(("fd_", "is_"))} == expected_names, "each number with its SE"
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


def test_a_baseline_checkpoint_from_before_the_conditioning_field_still_loads(tmp_path):
    """A baseline has no denoiser: the field's absence in its older checkpoint changes nothing."""
    from trainables.checkpoint import load_checkpoint

    cfg = _cfg(max_epochs=1, kind="baseline", noise_std=0.0)
    old_config = {k: v for k, v in cfg.to_flat().items() if k != "denoiser_conditioning"}
    save_checkpoint(tmp_path, config=old_config, epoch=1, units={}, rng=rng_state())
    assert load_checkpoint(tmp_path, config=cfg.to_flat())["epoch"] == 1


def test_checkpoint_loads_with_weights_only_and_holds_the_config(tmp_path):
    exp = Experiment(_cfg(max_epochs=1), log=lambda m: None)
    exp.save(tmp_path)
    payload = load_checkpoint(tmp_path, config=exp.cfg.to_flat())  # torch.load(weights_only=True) inside
    assert payload["config"] == exp.cfg.to_flat()
    assert set(payload["units"]) == {"smoothed", "denoiser"}
    assert not list(tmp_path.glob(".checkpoint.pt.tmp*")), "no temporary file left behind"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing", config=exp.cfg.to_flat())


def test_training_subset_and_test_cap_are_the_same_seeded_images_in_every_trial():
    import dataclasses

    from trainables.data import load_dataset, subset_indices

    base = _cfg()
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, train_subset=100))
    other_seed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=99, kind="baseline"),
                                     data=dataclasses.replace(cfg.data, noise_std=0.0))
    a, b = Experiment(cfg, log=lambda _: None), Experiment(other_seed, log=lambda _: None)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert a.train_images.shape == (100, 1, 8, 8) and a.test_images.shape == (64, 1, 8, 8)
    torch.testing.assert_close(a.train_images, train[torch.from_numpy(subset_indices(len(train), 100))])
    torch.testing.assert_close(a.test_images, test[torch.from_numpy(subset_indices(len(test), 64))])
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_images, b.test_images)
    assert not torch.equal(a.test_images, test[:64]), "a seeded sample, not the first images of the file"


def test_sample_grids_are_upscaled_without_smoothing():
    from torchvision.utils import make_grid

    from trainables.quality.trial_evaluation import GRID_MIN_WIDTH, upscaled_grid

    images = torch.rand(64, 1, 8, 8)
    plain = make_grid(images, nrow=8)                       # (3, 82, 82): what was logged before
    big = upscaled_grid(images)
    k = 4                                                   # ceil(256 / 82)
    assert plain.shape[-1] == 82 and big.shape == (3, 82 * k, 82 * k) and big.shape[-1] >= GRID_MIN_WIDTH
    assert torch.equal(big[:, ::k, ::k], plain), "every k-th pixel is the original"
    blocks = big.reshape(3, 82, k, 82, k)
    assert torch.equal(blocks, plain[:, :, None, :, None].expand_as(blocks)), "k x k blocks of one value"
    assert upscaled_grid(torch.rand(4, 3, 128, 128)).shape[-1] == 2 + 2 * 130, "wide enough: k = 1"


@pytest.mark.parametrize("bound_every,has_bound",  # the bound's epoch (~1.6 CPU-s) is slow; skipping it runs fast
                         [pytest.param("epoch", True, marks=pytest.mark.slow), ("eval", False)])
def test_bound_every_eval_skips_the_bound_between_evaluations(bound_every, has_bound):
    import dataclasses

    cfg = _cfg(train_subset=TRAIN_SUBSET)  # 2 epochs, eval_every 100: epoch 1 evaluates no samples
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, bound_every=bound_every))
    metrics = Experiment(cfg, log=lambda message: None).run_epoch()
    assert ("bpd_bound" in metrics) == has_bound
    assert "test_bpd_smoothed" in metrics and "fd_digits_cnn" not in metrics
    with pytest.raises(ValueError, match="bound_every"):
        dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, bound_every="sometimes")).validate()


def _independent_bound_bpd(exp, generators) -> float:
    """bpd.two_step_bound_nats with one draw from each generator per batch of 256, averaged: the
    bound computed apart from the test pass, by the function the study's docs describe."""
    from trainables.losses import DenoiserNLL, SmoothedNLL
    from trainables.quality.bpd import bits_per_dim, two_step_bound_nats

    smoothed, denoiser = exp.units["smoothed"].eval_model.eval(), exp.units["denoiser"].eval_model.eval()
    total = 0.0
    with torch.no_grad():
        for x in exp.test_images.split(256):
            terms = [two_step_bound_nats(x, smoothed_log_prob=lambda z: -SmoothedNLL()(smoothed, None, z),
                                         denoiser_log_prob=lambda c, z: -DenoiserNLL("discretized")(denoiser, c, z),
                                         noise_std=exp.cfg.data.noise_std, num_draws=1, generator=g)
                     for g in generators]
            total += float(sum(terms).sum()) / len(terms)
    return float(bits_per_dim(total, exp.test_images.numel(), continuous=False))


@pytest.mark.parametrize("draws,likelihood", [(1, "discretized"), (2, "discretized"), (1, "continuous")])
def test_the_bound_takes_its_first_draw_from_the_test_batches(draws, likelihood):
    """One pass gives the test bits/dim and the bound: the bound's first x~ is the test batches' own
    (their NLLs are its terms), later draws come from stream 1; the same numbers computed apart."""
    import dataclasses

    from trainables.data import epoch_generator
    from trainables.experiment import TEST_NOISE_EPOCH
    from trainables.training import evaluate_nll

    cfg = _cfg(max_epochs=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, bound_noise_draws=draws, max_eval_images=300),
                              train=dataclasses.replace(cfg.train, denoiser_likelihood=likelihood))
    exp = Experiment(cfg, log=lambda m: None)
    torch.manual_seed(0)
    metrics = exp._test_bpd_and_bound(with_bound=True)
    seed = cfg.train.seed
    expected = _independent_bound_bpd(exp, [epoch_generator(seed, TEST_NOISE_EPOCH, stream=s) for s in range(draws)])
    assert metrics["bpd_bound"] == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)  # a continuous denoiser's test NLL jitters x with the global RNG
    for name in ("smoothed", "denoiser"):
        unit = exp.units[name]
        test = evaluate_nll(unit, exp._test_batches(), device="cpu")
        assert metrics[f"test_bpd_{name}"] == pytest.approx(test.bpd(unit.loss.continuous), rel=1e-6)
    assert "bpd_bound" not in exp._test_bpd_and_bound(with_bound=False)
