"""PixelDraw draws what likelihoods' samplers draw at a pixel, given the same uniforms."""
import pytest
import torch

from trainables.likelihoods import draw_uniforms, mixture_param_count, sample_continuous_mol, sample_discretized_mol
from trainables.sampling.pixel_draw import PixelDraw


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("discretized", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_pixel_as_the_map_sampler_draws_it(channels, discretized, temperature, dtype):
    n, k, h, w = 64, 5, 3, 4
    g = torch.Generator().manual_seed(channels * 10 + discretized)
    params = torch.randn(n, mixture_param_count(channels, k), h, w, generator=g, dtype=dtype) * 2
    params[:, k:].mul_(0.5)  # means and log scales in the data's range, both edges of [-1, 1] reached
    uniforms = draw_uniforms(n, channels, k, h, w, generator=g, dtype=dtype)
    sampler = sample_discretized_mol if discretized else sample_continuous_mol
    expected = sampler(params, channels=channels, uniforms=uniforms, temperature=temperature)  # (N, C, H, W)
    draw = PixelDraw(uniforms, channels, temperature, quantize=discretized)
    got = torch.stack([torch.stack([draw(params[:, :, i, j], i, j) for j in range(w)], dim=-1) for i in range(h)], dim=-2)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.shape == expected.shape and got.dtype == dtype
    assert (got - expected).abs().max() <= tolerance
    if discretized:
        assert torch.equal(got, ((got + 1) * 127.5).round() / 127.5 - 1), "values on the 8-bit grid"
        assert got.min() == -1 and got.max() == 1, "the clamp was exercised"


def test_a_temperature_that_is_not_positive_is_refused():
    uniforms = draw_uniforms(1, 1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="temperature"):
        PixelDraw(uniforms, 1, 0.0, quantize=True)
