"""Exact dependency analysis of the denoiser p(x | x~) at the study's default depth.

What is measured. For clean pixel p (raster index) and channel c, the quantity
q[p, c] = sum_k (logit_k + coupled mean_{c,k} + log_scale_{c,k}) collects every number the
likelihood uses to score x[c] at p (the mixture logits, channel c's mean after the RGB
coupling mean_g = mu_g + a x_r, ... of `likelihoods.autoregressive_means`, and its scale).
Its gradient w.r.t. x and x~ (float64, random weights and biases) is nonzero exactly
where q depends on the input: a structural non-dependence gives an exact 0.0, and an
accidental exact zero of a real dependence is improbable at random float64 weights.
One backward pass per channel gives the row of every pixel at once: the batch holds
one copy of (x, x~) per probed pixel, and copy b scores only its pixel (the batch
elements are independent, test_pixelcnnpp.test_batch_elements_are_independent).

What is asserted, for every probed pixel and channel:
- q depends on every pixel and channel of x~ (the denoiser sees all of x~);
- q depends on no pixel after p and, at p, only on the channels before c (RGB order);
- q depends on the left neighbour and the pixel above, and on exactly the pixels of x
  that the unconditional model of the same depth sees: conditioning neither widens nor
  narrows the view of x's past. That view is bounded by the receptive field: at depth 1
  a few far pixels of the past are missed already at 8x8 (pixel (1, 0) misses (0, 7)),
  at TrialConfig's depth 2 the whole past is seen at 8x8 (asserted exactly).
At 8x8 every pixel is probed; at 28x28 and 32x32 every pixel of rows 0, 1, the middle
row and the last two rows (the first and last pixels included), which keeps the test
to seconds with 2 filters (the dependency structure does not depend on the filter count).
"""
import pytest
import torch

from study.config import STUDY_SIZE
from trainables.config import ModelConfig
from trainables.likelihoods import autoregressive_means, unpack_params
from trainables.pixelcnnpp import PixelCNNpp

DEPTH = STUDY_SIZE["nr_resnet"]  # the depth the study uses by default


def _model(channels, conditional=True, nr_resnet=DEPTH, filters=2, mixtures=2):
    torch.manual_seed(0)
    model = PixelCNNpp(channels, filters, nr_resnet, mixtures, conditional=conditional).double().eval()
    with torch.no_grad():  # random biases: no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model


def _scored_quantities(model, x, x_noisy):
    """q (N, C, H, W): per pixel and channel, the sum of what scores x[c] there."""
    channels = x.shape[1]
    mix = unpack_params(model(x, x_noisy) if model.conditional else model(x), channels=channels)
    means = autoregressive_means(x.unsqueeze(2), means=mix.means, coeffs=mix.coeffs)  # (N, C, K, H, W)
    return (means + mix.log_scales).sum(dim=2) + mix.logit_probs.sum(dim=1, keepdim=True)


def dependencies(model, shape, pixels, chunk=256):
    """Boolean dependence of q[p, c] on x and on x~: two (len(pixels), C, C, H*W) tensors,
    indexed [probe, scored channel c, input channel c', input pixel]."""
    c, h, w = shape
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, c, h, w, generator=g, dtype=torch.float64) * 2 - 1
    x_noisy = x + 0.5 * torch.randn(1, c, h, w, generator=g, dtype=torch.float64)
    on_x, on_noisy = [], []
    for start in range(0, len(pixels), chunk):
        probe = torch.tensor(pixels[start : start + chunk])
        b = len(probe)
        xs = x.expand(b, -1, -1, -1).clone().requires_grad_(True)
        ns = x_noisy.expand(b, -1, -1, -1).clone().requires_grad_(True)
        q = _scored_quantities(model, xs, ns).flatten(2)[torch.arange(b), :, probe]  # (b, C)
        rows_x, rows_n = [], []
        for ch in range(c):
            gx, gn = torch.autograd.grad(q[:, ch].sum(), (xs, ns), retain_graph=ch < c - 1, allow_unused=True)
            gn = torch.zeros_like(ns) if gn is None else gn  # an unconditional model ignores x~
            rows_x.append(gx.flatten(2) != 0)  # (b, C', H*W)
            rows_n.append(gn.flatten(2) != 0)
        on_x.append(torch.stack(rows_x, 1))
        on_noisy.append(torch.stack(rows_n, 1))
    return torch.cat(on_x), torch.cat(on_noisy)


def _causal_mask(pixels, c, hw):
    """(P, C, C', H*W): True where q[p, c] may depend on x[c'] at a pixel (earlier pixels,
    and the earlier channels of p itself)."""
    p = torch.tensor(pixels).view(-1, 1, 1, 1)
    at = torch.arange(hw).view(1, 1, 1, -1)
    earlier_channel = torch.arange(c).view(1, 1, -1, 1) < torch.arange(c).view(1, -1, 1, 1)
    return (at < p) | ((at == p) & earlier_channel)


def _probe_rows(h, w):
    rows = sorted({0, 1, h // 2, h - 2, h - 1})
    return [r * w + col for r in rows for col in range(w)]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (1, 28, 28), *(  # the larger ones (~6 CPU-s) are slow
    pytest.param(s, marks=pytest.mark.slow) for s in ((3, 28, 28), (1, 32, 32), (3, 32, 32)))])
def test_every_probed_pixel_sees_all_of_x_noisy_and_only_its_past(shape):
    c, h, w = shape
    pixels = list(range(h * w)) if h * w <= 64 else _probe_rows(h, w)
    on_x, on_noisy = dependencies(_model(c), shape, pixels)
    missing = (~on_noisy).flatten(1).any(1)
    assert not missing.any(), f"{int(missing.sum())} of {len(pixels)} probed pixels miss part of x~"
    causal = _causal_mask(pixels, c, h * w).expand_as(on_x)
    assert not (on_x & ~causal).any(), "a pixel depends on itself (a later channel) or on a later pixel"
    own = torch.arange(c).view(1, -1, 1) > torch.arange(c).view(1, 1, -1)  # q[c] reads x[c'] at p iff c' < c
    at_p = on_x[torch.arange(len(pixels)), :, :, torch.tensor(pixels)]  # (P, C, C')
    assert torch.equal(at_p, own.expand_as(at_p))
    for k, p in enumerate(pixels):
        i, j = divmod(p, w)
        if j > 0:
            assert on_x[k, :, :, p - 1].all(), f"pixel {p} misses its left neighbour"
        if i > 0:
            assert on_x[k, :, :, p - w].all(), f"pixel {p} misses the pixel above"
    unconditional, _ = dependencies(_model(c, conditional=False), shape, pixels)
    assert torch.equal(on_x, unconditional), "conditioning changed which pixels of x are seen"


@pytest.mark.parametrize("channels", [1, 3])
def test_8x8_at_the_default_model_depth_every_pixel_sees_exactly_its_past(channels):
    """TrialConfig's nr_resnet (2) covers the whole past at 8x8 (depth 1 misses a few
    far pixels of the row above and of the same row, with or without conditioning)."""
    depth = ModelConfig().nr_resnet
    on_x, on_noisy = dependencies(_model(channels, nr_resnet=depth), (channels, 8, 8), list(range(64)))
    assert on_noisy.all()
    assert torch.equal(on_x, _causal_mask(list(range(64)), channels, 64).expand_as(on_x))
