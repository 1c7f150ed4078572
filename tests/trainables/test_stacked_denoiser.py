"""The stacked denoiser (denoiser_conditioning="stacked", the authors' design): x~ above x in one
2H x W image through the unconditional network, the bottom half's outputs scored.

What is checked: it is the unconditional network on the stacked image (same parameters, same
initial values, same outputs); it is causal over x; the structural receptive field
(conditioning.stacked_dependencies) equals the real network's gradient dependencies at every
pixel of small images and at the probed rows of 28x28; and the coverage facts the config
validation relies on: at the paper's depth (nr_resnet 5) every clean pixel sees all of x~ at
28x28 and 32x32, at depth 1 only 440 of 784 (28x28) and 368 of 1024 (32x32) do.
"""
import pytest
import torch

from tests.trainables.test_denoiser_dependencies import _causal_mask, dependencies
from tests.trainables.test_fast_sampling import one_thread  # noqa: F401 (an autouse fixture)
from trainables.conditioning import stacked_dependencies
from trainables.pixelcnnpp import PixelCNNpp, full_coverage_depth, stacked_coverage




def _model(channels, nr_resnet=1, filters=2, mixtures=2, conditioning="stacked", conditional=True, seed=0):
    torch.manual_seed(seed)
    model = PixelCNNpp(channels, filters, nr_resnet, mixtures, conditional=conditional,
                       conditioning=conditioning).double().eval()
    with torch.no_grad():  # random biases: no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model


def test_stacked_has_the_unconditional_parameters_and_initial_values_and_encoder_is_unchanged():
    def state(**kwargs):
        torch.manual_seed(5)
        return PixelCNNpp(3, 8, 2, 4, **kwargs).state_dict()

    stacked, plain = state(conditional=True, conditioning="stacked"), state()
    assert list(stacked) == list(plain)
    assert all(torch.equal(stacked[k], plain[k]) for k in plain)
    encoder, default = state(conditional=True, conditioning="encoder"), state(conditional=True)
    assert list(encoder) == list(default) and all(torch.equal(encoder[k], default[k]) for k in default)
    assert any(k.startswith("encoder.") for k in encoder) and not any(k.startswith("encoder.") for k in stacked)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        PixelCNNpp(1, 4, 1, 2, conditional=True, conditioning="channels")


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 8)])
def test_forward_is_the_unconditional_network_on_the_stacked_image(shape):
    c, h, w = shape
    stacked = _model(c)
    plain = PixelCNNpp(c, 2, 1, 2).double().eval()
    plain.load_state_dict(stacked.state_dict())
    g = torch.Generator().manual_seed(1)
    x, x_noisy = (torch.rand(2, c, h, w, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(2))
    out = stacked(x, x_noisy)
    assert out.shape == (2, plain.head.conv.out_channels, h, w)
    image = torch.zeros(2, c, 2 * h, w, dtype=torch.float64)
    image[:, :, :h], image[:, :, h:] = x_noisy, x  # x~ above x, by hand
    torch.testing.assert_close(out, plain(image)[:, :, h:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="x_noisy"):
        stacked(x)


def _gradient_dependencies(model, height, width, outputs):
    """(len(outputs), H*W) bool: which input pixels of an H x W image each output pixel's mixture
    parameters depend on, from the real network's gradients (float64, random weights and biases)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, model.in_channels, height, width, generator=g, dtype=torch.float64) * 2 - 1
    xs = x.expand(len(outputs), -1, -1, -1).clone().requires_grad_(True)
    probe = torch.tensor(outputs)
    out = model(xs).flatten(2)[torch.arange(len(outputs)), :, probe]  # (B, P): copy b scores output b only
    grad, = torch.autograd.grad(out.sum(), xs)
    return (grad != 0).any(dim=1).flatten(1)


@pytest.mark.parametrize("shape,nr_resnet", [((1, 16, 8), 1), ((3, 16, 8), 2), ((1, 24, 12), 1), ((1, 8, 20), 1)])
def test_structural_receptive_field_equals_the_gradients_at_every_pixel(shape, nr_resnet):
    """Every output of the whole stacked image (both halves), against every input pixel."""
    c, h2, w = shape
    plain = _model(c, nr_resnet, conditional=False)
    structural = stacked_dependencies(plain, h2, w)
    assert torch.equal(structural, _gradient_dependencies(plain, h2, w, list(range(h2 * w))))
    earlier = torch.ones(h2 * w, h2 * w, dtype=torch.bool).tril(-1)
    assert not (structural & ~earlier).any(), "causal: no output depends on its own or a later pixel"
    if nr_resnet == 1:  # not trivially the causal mask: depth 1 misses part of the past (the equality is tested)
        assert (earlier & ~structural).any()


def test_28x28_depth_1_is_causal_over_x_and_misses_exactly_the_x_noisy_the_structure_says():
    """The real stacked denoiser's gradients (x and x~ as separate inputs) at three rows of the
    clean half (first, middle, last): no probed pixel depends on x at or after itself, and its
    dependencies on x~ are the structural ones; 440 of 784 clean pixels see all of x~."""
    c, h, w = 1, 28, 28
    pixels = [r * w + col for r in (0, h // 2, h - 1) for col in range(w)]
    on_x, on_noisy = dependencies(_model(c, nr_resnet=1), (c, h, w), pixels)
    assert not (on_x & ~_causal_mask(pixels, c, h * w).expand_as(on_x)).any(), "x at or after the pixel is seen"
    for k, p in enumerate(pixels):
        assert p % w == 0 or on_x[k, :, :, p - 1].all(), "the left neighbour is seen"
    with torch.device("meta"):
        geometry = PixelCNNpp(1, 1, 1, 1)
    structural = stacked_dependencies(geometry, 2 * h, w)[[h * w + p for p in pixels], : h * w]
    seen = on_noisy.flatten(1)  # (probes, H*W): any channel
    assert torch.equal(seen, structural)
    sees_all = seen.all(dim=1)
    assert sees_all[:w].all() and not sees_all[-w:].any()  # row 0 of x sees all of x~, the last row does not
    assert not seen[-1, : 9 * w].any() and seen[-1, 9 * w :].all()  # the last pixel misses x~ rows 0-8
    assert stacked_coverage(1, h, w) == 440
    assert stacked_coverage(1, 32, 32) == 368


@pytest.mark.parametrize("side", [28, 32])
def test_the_paper_depth_covers_all_of_x_noisy(side):
    assert stacked_coverage(5, side, side) == side * side
    assert full_coverage_depth(side, side) == 2  # depth 1 does not, 2 already does


def test_at_the_paper_depth_the_first_and_last_clean_pixels_see_all_of_x_noisy_and_only_their_past():
    """Gradients of the real depth-5 stacked denoiser at 28x28, at the clean half's first pixel
    (nearest to x~) and its last (farthest): all of x~, and of x what the unconditional model of
    the same depth sees, which is causal (PixelCNN++'s own blind spot: the last pixel misses the
    first five pixels of its row)."""
    c, h, w = 1, 28, 28
    pixels = [0, h * w - 1]
    on_x, on_noisy = dependencies(_model(c, nr_resnet=5), (c, h, w), pixels)
    assert on_noisy.all()
    plain, _ = dependencies(_model(c, nr_resnet=5, conditional=False), (c, h, w), pixels)
    assert torch.equal(on_x, plain)
    assert not (on_x & ~_causal_mask(pixels, c, h * w).expand_as(on_x)).any()
    assert not on_x[1, 0, 0, (h - 1) * w : (h - 1) * w + 5].any() and on_x[1, 0, 0, : (h - 1) * w].all()


def test_rgb_stacked_denoiser_keeps_the_channel_order_at_its_own_pixel():
    """Depth 2 at 8x8: every pixel sees exactly its past (and the earlier channels of itself) and all of x~."""
    c = 3
    pixels = list(range(64))
    on_x, on_noisy = dependencies(_model(c, nr_resnet=2), (c, 8, 8), pixels)
    assert torch.equal(on_x, _causal_mask(pixels, c, 64).expand_as(on_x))
    assert on_noisy.all()
