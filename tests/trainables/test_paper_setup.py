"""The authors' setup the `paper` space uses: channel-wise dropout, the denoiser's own batch
size, and the denoiser's continuous likelihood of x + 0.01 N(0, 1)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special, stats

from trainables.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from trainables.layers import DownShiftedConv2d, GatedResnet
from trainables.losses import CLEAN_NOISE_STD, DenoiserNLL


def test_gated_resnet_dropout_drops_whole_channels():
    torch.manual_seed(0)
    block = GatedResnet(16, DownShiftedConv2d, dropout=0.5).train()
    seen = {}
    block.dropout.register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0], y=output))
    inputs = torch.randn(8, 16, 6, 6)
    block(inputs)
    x, y = seen["x"], seen["y"]  # (8, 32, 6, 6): concat_elu doubles the channels
    kept = (y != 0).flatten(2)
    assert torch.all(kept.all(dim=2) | ~kept.any(dim=2)), "a channel is dropped at every pixel or at none"
    torch.testing.assert_close(y[kept.view_as(y)], 2.0 * x[kept.view_as(y)])  # survivors scaled by 1 / (1 - 0.5)
    dropped = (~kept.any(dim=2)).float().mean().item()  # of 8 * 32 = 256 channels
    assert 0.4 < dropped < 0.6  # Binomial(256, 0.5): +-3 sd is 0.41..0.59
    block.eval()
    torch.testing.assert_close(block(inputs), block(inputs))  # no dropout in eval mode


class _FixedParams(torch.nn.Module):
    """A stand-in denoiser: fixed mixture parameters, and a record of what it was shown."""

    def __init__(self, params: torch.Tensor):
        super().__init__()
        self.params = params

    def forward(self, x, x_noisy):
        self.seen = (x.clone(), x_noisy.clone())
        return self.params


def test_continuous_denoiser_loss_is_the_logistic_mixture_density_of_jittered_x():
    n, k, h, w = 3, 4, 5, 6
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, h, w), generator=gen).float() / 127.5 - 1.0  # (N, 1, H, W), as trained
    x_noisy = x + 0.3 * torch.randn(x.shape, generator=gen)
    logits, means = torch.randn(n, k, h, w, generator=gen), 0.8 * torch.randn(n, k, h, w, generator=gen)
    log_scales = -3.0 + torch.rand(n, k, h, w, generator=gen)
    model = _FixedParams(torch.cat([logits, means, log_scales], dim=1))  # (N, 3K, H, W), likelihoods' layout

    torch.manual_seed(7)
    nll = DenoiserNLL("continuous")(model, x, x_noisy)  # (N,)
    torch.manual_seed(7)
    jittered = (x + CLEAN_NOISE_STD * torch.randn_like(x)).double().numpy()[:, 0]  # the draw the loss must make

    seen_x, seen_noisy = model.seen
    np.testing.assert_array_equal(seen_x.double().numpy()[:, 0], jittered)  # the network sees x'
    assert 0.002 < np.std(jittered - x.double().numpy()[:, 0]) < 0.02  # jitter of sd 0.01, 90 draws
    assert torch.equal(seen_noisy, x_noisy)
    # Independent: log sum_k softmax(logits)_k Logistic(x'; mu_k, e^{log s_k}) with scipy, summed over pixels.
    log_weights = special.log_softmax(logits.double().numpy(), axis=1)  # (N, K, H, W)
    log_pdf = stats.logistic.logpdf(jittered[:, None], loc=means.double().numpy(),
                                    scale=np.exp(log_scales.double().numpy()))
    expected = -special.logsumexp(log_weights + log_pdf, axis=1).sum(axis=(1, 2))  # (N,)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-5)  # the likelihood runs in float32
    assert DenoiserNLL("continuous").continuous and not DenoiserNLL().continuous
    # The default stays the discretized probability of x itself, noise-free.
    DenoiserNLL()(model, x, x_noisy)
    assert torch.equal(model.seen[0], x)


def _cfg(**train):
    return TrialConfig(model=ModelConfig(nr_filters=4, nr_resnet=1, num_mixtures=2),
                       train=TrainConfig(kind="smoothed", max_epochs=1, **train), data=DataConfig(noise_std=0.3),
                       eval=EvalConfig(eval_every=100, num_eval_samples=2, bound_noise_draws=1, max_eval_images=32))


def test_denoiser_batch_size_defaults_to_batch_size():
    assert _cfg(batch_size=80).train.unit_batch_size("denoiser") == 80
    t = _cfg(batch_size=80, denoiser_batch_size=50).train
    assert (t.unit_batch_size("smoothed"), t.unit_batch_size("denoiser"), t.unit_batch_size("baseline")) == (80, 50, 80)
    with pytest.raises(ValueError, match="denoiser_likelihood"):
        TrialConfig.from_flat({"denoiser_likelihood": "gaussian"})
    with pytest.raises(ValueError, match="denoiser_batch_size"):
        TrialConfig.from_flat({"denoiser_batch_size": -1})


@pytest.mark.filterwarnings("ignore::trainables.quality.scores.FewSamplesWarning")  # 2 samples: cost only
def test_each_model_of_a_trial_steps_with_its_batch_size():
    from trainables.experiment import Experiment

    exp = Experiment(_cfg(batch_size=400, denoiser_batch_size=250, denoiser_likelihood="continuous"),
                     device="cpu", log=lambda m: None)
    metrics = exp.run_epoch()
    n = len(exp.train_images)
    steps = {name: unit.scheduler.last_epoch for name, unit in exp.units.items()}  # one lr step per batch
    assert steps == {"smoothed": -(-n // 400), "denoiser": -(-n // 250)}
    assert np.isfinite(metrics["train_bpd_denoiser"]) and np.isfinite(metrics["bpd_bound"])


def test_the_paper_space_runs_the_authors_stacked_denoiser_at_a_depth_that_sees_all_of_x_noisy():
    """Their conditioned runner stacks x~ above x; at the paper's depth every clean pixel of every
    dataset's image size sees all of x~, so the config validates (test_stacked_denoiser.py)."""
    from search_spaces import SPACES
    from trainables.data import image_shape
    from trainables.pixelcnnpp import stacked_coverage

    for dataset, fixed in SPACES["paper"].fixed_per_dataset.items():
        assert fixed["denoiser_conditioning"] == "stacked", dataset
        _, h, w = image_shape(dataset)
        assert stacked_coverage(fixed["nr_resnet"], h, w) == h * w, dataset
        TrialConfig.from_flat({**fixed, "dataset": dataset, "kind": "smoothed"})  # validates, coverage included


@pytest.mark.filterwarnings("ignore::trainables.quality.scores.FewSamplesWarning")  # 2 samples: cost only
def test_a_stacked_trial_trains_scores_and_samples_its_denoiser_on_the_stacked_image():
    """The denoiser of a stacked trial has exactly the smoothed model's parameter shapes (no encoder);
    an epoch trains both, scores the bound and draws two-step samples with the fast sampler."""
    from trainables.experiment import Experiment

    cfg = TrialConfig(model=ModelConfig(nr_filters=4, nr_resnet=1, num_mixtures=2, denoiser_conditioning="stacked"),
                      train=TrainConfig(kind="smoothed", max_epochs=1, batch_size=400),
                      data=DataConfig(noise_std=0.3, train_subset=400),  # one step of each model
                      eval=EvalConfig(eval_every=1, num_eval_samples=2, bound_noise_draws=1, max_eval_images=32))
    exp = Experiment(cfg, device="cpu", log=lambda m: None)
    denoiser, smoothed = exp.units["denoiser"].model, exp.units["smoothed"].model
    assert denoiser.stacked and denoiser.encoder is None
    assert {k: v.shape for k, v in denoiser.state_dict().items()} == {k: v.shape for k, v in smoothed.state_dict().items()}
    metrics = exp.run_epoch()
    assert np.isfinite(metrics["test_bpd_denoiser"]) and np.isfinite(metrics["bpd_bound"])
    twostep = exp.evaluator.last_samples["twostep"]
    assert twostep.shape == (2, 1, 8, 8) and torch.equal(twostep, ((twostep + 1) * 127.5).round() / 127.5 - 1)
