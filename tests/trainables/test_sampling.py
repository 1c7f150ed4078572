"""Naive sampling, one-step gradient denoising (Tweedie) and two-step sampling."""
import pytest
import torch

from trainables.likelihoods import continuous_mol_log_prob, draw_uniforms
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling.naive import gradient_denoise, sample, to_image_range, tweedie_denoise, two_step_sample


def _model(channels=1, conditional=False, mixtures=3):
    torch.manual_seed(0)
    return PixelCNNpp(channels, 8, 1, mixtures, conditional=conditional)


def test_tweedie_gives_the_gaussian_posterior_mean():
    # x ~ N(m, s^2) per dimension, x~ = x + sigma * eps: log p(x~) is N(m, s^2 + sigma^2) and
    # E[x | x~] = m + s^2 / (s^2 + sigma^2) * (x~ - m).
    m, s, sigma = 0.2, 0.5, 0.3
    x_noisy = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    var = s**2 + sigma**2
    log_prob = lambda z: (-0.5 * (z - m) ** 2 / var).sum(dim=(1, 2, 3))  # noqa: E731 (constants drop out)
    expected = m + s**2 / var * (x_noisy - m)
    torch.testing.assert_close(tweedie_denoise(x_noisy, log_prob, sigma), expected)


def test_full_gradient_denoising_is_the_score_of_the_model_density():
    model = _model().double()
    x_noisy = torch.randn(3, 1, 8, 8, dtype=torch.float64) * 0.5
    out = gradient_denoise(model, x_noisy, 0.3, mode="full")
    z = x_noisy.clone().requires_grad_(True)
    score = torch.autograd.grad(continuous_mol_log_prob(z, model(z)).sum(), z)[0]
    torch.testing.assert_close(out, x_noisy + 0.09 * score)


def test_fixed_output_mode_holds_the_network_output_constant():
    model = _model().double().eval()
    x_noisy = torch.randn(3, 1, 8, 8, dtype=torch.float64) * 0.5
    params = model(x_noisy).detach()
    z = x_noisy.clone().requires_grad_(True)
    score = torch.autograd.grad(continuous_mol_log_prob(z, params).sum(), z)[0]
    out = gradient_denoise(model, x_noisy, 0.3, mode="fixed_output")
    torch.testing.assert_close(out, x_noisy + 0.09 * score)
    assert not torch.allclose(out, gradient_denoise(model, x_noisy, 0.3, mode="full"))
    with pytest.raises(ValueError, match="mode"):
        gradient_denoise(model, x_noisy, 0.3, mode="exact")


@pytest.mark.parametrize("channels,discretized", [  # ~2 CPU-s each: the continuous and the RGB case are slow
    (1, True), pytest.param(1, False, marks=pytest.mark.slow), pytest.param(3, True, marks=pytest.mark.slow)])
def test_samples_are_a_function_of_the_uniforms_alone(channels, discretized):
    model = _model(channels)
    uniforms = draw_uniforms(4, channels, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = sample(model, 4, (channels, 8, 8), discretized=discretized, uniforms=uniforms)
    b = sample(model, 4, (channels, 8, 8), discretized=discretized, uniforms=uniforms)
    assert torch.equal(a, b)
    assert model.training, "the caller's train/eval mode is restored"
    if discretized:
        levels = (a + 1) * 127.5
        assert torch.allclose(levels, levels.round(), atol=1e-4) and a.min() >= -1 and a.max() <= 1


def test_sampled_pixels_follow_the_model_conditionals():
    # Each pixel is drawn from the model's distribution given the earlier pixels: re-running
    # the network on the finished image and sampling every pixel in parallel with the same
    # uniforms must reproduce the image (it depends only on earlier pixels, by causality).
    from trainables.likelihoods import sample_continuous_mol

    model = _model().eval()
    uniforms = draw_uniforms(4, 1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x = sample(model, 4, (1, 8, 8), discretized=False, uniforms=uniforms)
    with torch.no_grad():
        again = sample_continuous_mol(model(x), channels=1, uniforms=uniforms)
    torch.testing.assert_close(again, x)


def test_two_step_sampling_conditions_the_denoiser_on_smoothed_samples():
    smoothed, denoiser = _model(), _model(conditional=True)
    gen = torch.Generator().manual_seed(0)
    x_noisy, x = two_step_sample(smoothed, denoiser, 3, (1, 8, 8), generator=gen)
    assert x_noisy.shape == x.shape == (3, 1, 8, 8)
    levels = (x + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert x_noisy.abs().max() > 0 and not torch.equal(x, x_noisy)
    assert to_image_range(x_noisy * 10).abs().max() <= 1
