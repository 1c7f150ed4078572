"""Normalisation, independent-reference and sampling checks of trainables/likelihoods.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from trainables.likelihoods import (
    LOG_SCALE_MIN,
    autoregressive_means,
    continuous_mol_log_prob,
    discretized_mol_log_prob,
    draw_uniforms,
    mixture_param_count,
    sample_continuous_mol,
    sample_discretized_mol,
    unpack_params,
)

F64 = torch.float64
GRID = torch.arange(256, dtype=F64) / 127.5 - 1.0  # the 8-bit values on [-1, 1]


# ---------------------------------------------------------------- helpers (independent of the module)

def pack(logits, means, log_scales, coeffs=None):
    """The documented layout: [logits (K) | means (C*K) | log_scales (C*K) | coeffs (3*K)]."""
    n, c, k, h, w = means.shape
    parts = [logits, means.reshape(n, c * k, h, w), log_scales.reshape(n, c * k, h, w)]
    if coeffs is not None:
        parts.append(coeffs.reshape(n, 3 * k, h, w))
    return torch.cat(parts, dim=1)


def random_parts(seed, *, n=2, c=1, k=3, h=2, w=3, mean=(-1.0, 1.0), log_scale=(-3.0, 0.5), logit=2.0):
    g = torch.Generator().manual_seed(seed)

    def uni(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64)

    logits = logit * torch.randn((n, k, h, w), generator=g, dtype=F64)
    means = uni((n, c, k, h, w), *mean)
    log_scales = uni((n, c, k, h, w), *log_scale)
    coeffs = torch.randn((n, 3, k, h, w), generator=g, dtype=F64) if c == 3 else None
    return logits, means, log_scales, coeffs


def np_parts(logits, means, log_scales, coeffs):
    """numpy copies with the documented transforms (clamp, tanh) applied."""
    ls = np.maximum(log_scales.numpy(), LOG_SCALE_MIN)
    return logits.numpy(), means.numpy(), np.exp(ls), None if coeffs is None else np.tanh(coeffs.numpy())


def np_coupled_means(x, means, coeffs):
    """x (N, C, H, W), means (N, C, K, H, W) -> coupled means, written out per channel."""
    if coeffs is None:
        return means
    r, g = x[:, 0:1], x[:, 1:2]  # (N, 1, H, W), broadcast over K
    out = means.copy()
    out[:, 1] = means[:, 1] + coeffs[:, 0] * r
    out[:, 2] = means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g
    return out


def np_continuous(x, logits, means, scales, coeffs):
    m = np_coupled_means(x, means, coeffs)
    lp = stats.logistic.logpdf(x[:, :, None], loc=m, scale=scales).sum(axis=1)  # (N, K, H, W)
    return special.logsumexp(lp + special.log_softmax(logits, axis=1), axis=1)


def np_discretized(x, logits, means, scales, coeffs):
    """Exact bin masses from scipy's logistic cdf/sf; the documented mid-point rule below 1e-5."""
    m = np_coupled_means(x, means, coeffs)
    xx = np.broadcast_to(x[:, :, None], m.shape)
    lo = np.where(xx < -0.999, -np.inf, xx - 1 / 255)
    hi = np.where(xx > 0.999, np.inf, xx + 1 / 255)
    dist = stats.logistic(loc=m, scale=scales)
    mass = np.where(xx > m, dist.sf(lo) - dist.sf(hi), dist.cdf(hi) - dist.cdf(lo))
    edge = (xx < -0.999) | (xx > 0.999)
    fallback = dist.logpdf(xx) + np.log(2 / 255)
    lp = np.where(edge | (mass > 1e-5), np.log(np.maximum(mass, 1e-300)), fallback).sum(axis=1)
    return special.logsumexp(lp + special.log_softmax(logits, axis=1), axis=1)


def mixture_cdf(x, logits, means, scales):
    """1-D logistic mixture CDF in numpy; logits, means, scales: (K,)."""
    weights = special.softmax(logits)
    return sum(wk * stats.logistic.cdf(x, loc=mk, scale=sk) for wk, mk, sk in zip(weights, means, scales))


def pixel_params(parts, count):
    """Repeat a one-pixel parameter set (1, P, 1, 1) `count` times along N."""
    return pack(*parts).expand(count, -1, -1, -1).contiguous()


def chi2_pvalue(observed, expected, min_expected=5.0):
    """Pearson chi-square with cells of expected count < min_expected pooled into one."""
    big = expected >= min_expected
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue


# ---------------------------------------------------------------- layout

def test_mixture_param_count_and_layout():
    assert mixture_param_count(1, 5) == 15 and mixture_param_count(3, 5) == 50
    with pytest.raises(ValueError):
        mixture_param_count(2, 5)
    logits, means, log_scales, coeffs = random_parts(0, c=3, log_scale=(-9.0, 1.0))
    mix = unpack_params(pack(logits, means, log_scales, coeffs), channels=3)
    torch.testing.assert_close(mix.logit_probs, logits, rtol=0, atol=0)
    torch.testing.assert_close(mix.means, means, rtol=0, atol=0)
    torch.testing.assert_close(mix.log_scales, log_scales.clamp(min=-7.0), rtol=0, atol=0)
    torch.testing.assert_close(mix.coeffs, torch.tanh(coeffs), rtol=0, atol=0)
    gray = unpack_params(pack(*random_parts(1, c=1)), channels=1)
    assert gray.coeffs is None and gray.means.shape == (2, 1, 3, 2, 3)
    with pytest.raises(ValueError):
        unpack_params(torch.zeros(1, 11, 2, 2), channels=1)


def test_autoregressive_means_formula():
    means = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64)  # (N=1, C=3)
    coeffs = torch.tensor([[0.5, -0.25, 2.0]], dtype=F64)  # a, b, c
    x = torch.tensor([[0.4, -0.6, 9.0]], dtype=F64)
    out = autoregressive_means(x, means=means, coeffs=coeffs)
    expected = torch.tensor([[0.1, 0.2 + 0.5 * 0.4, 0.3 - 0.25 * 0.4 + 2.0 * -0.6]], dtype=F64)
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------- continuous density

@pytest.mark.parametrize("channels", [1, 3])
def test_continuous_matches_scipy(channels):
    parts = random_parts(2, c=channels, log_scale=(-8.0, 1.5))
    x = 3.0 * torch.randn((2, channels, 2, 3), generator=torch.Generator().manual_seed(3), dtype=F64)
    got = continuous_mol_log_prob(x, pack(*parts))
    want = np_continuous(x.numpy(), *np_parts(*parts))
    assert got.shape == (2, 2, 3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def quadrature_grid():
    """Trapezoid grid on [-60, 60]: spacing 1e-4 on [-3, 3] (the means and the narrow components
    live there; scales >= e^-7 give >= 9 points per scale), 5e-3 outside (only wide components)."""
    return np.unique(np.concatenate([np.linspace(-60.0, 60.0, 24_001), np.linspace(-3.0, 3.0, 60_001)]))


def test_continuous_gray_integrates_to_one():
    # One pixel per column; log_scales down to -9 exercise the -7 clamp, up to 1 the wide tails.
    parts = random_parts(4, n=1, c=1, k=3, h=1, w=6, log_scale=(-9.0, 1.0), mean=(-2.0, 2.0))
    grid = quadrature_grid()
    x = torch.from_numpy(grid)[:, None, None, None].expand(-1, 1, 1, 6)  # (G, 1, 1, 6)
    density = continuous_mol_log_prob(x, pack(*parts).expand(len(grid), -1, -1, -1)).exp()  # (G, 1, 6)
    total = integrate.trapezoid(density[:, 0].numpy(), grid, axis=0)
    np.testing.assert_allclose(total, np.ones(6), atol=1e-6)


def test_continuous_rgb_conditionals_integrate():
    # Per pixel: int p(r, g, b) db = p(r, g) and int int p(r, g, b) dg db = p(r) (numpy references).
    parts = random_parts(5, n=1, c=3, k=3, h=1, w=2, log_scale=(-0.5, 0.5))
    logits, means, scales, coeffs = np_parts(*parts)
    params = pack(*parts)
    r, g = np.array([0.3, -1.2]), np.array([-0.4, 2.0])  # fixed values per pixel (w)
    axis = np.linspace(-40.0, 40.0, 801)
    # int over b: x (G, 3, 1, 2)
    x = np.zeros((len(axis), 3, 1, 2))
    x[:, 0, 0], x[:, 1, 0], x[:, 2, 0] = r, g, axis[:, None]
    dens = continuous_mol_log_prob(torch.from_numpy(x), params.expand(len(axis), -1, -1, -1)).exp().numpy()
    lp_rg = stats.logistic.logpdf(r, means[0, 0, :, 0], scales[0, 0, :, 0]) + stats.logistic.logpdf(
        g, means[0, 1, :, 0] + coeffs[0, 0, :, 0] * r, scales[0, 1, :, 0]
    )  # (K, 2 pixels)
    p_rg = np.exp(special.logsumexp(lp_rg + special.log_softmax(logits[0, :, 0], axis=0), axis=0))
    np.testing.assert_allclose(integrate.trapezoid(dens[:, 0], axis, axis=0), p_rg, rtol=1e-4)
    # int over (g, b): grid on (H, W) = (g, b), one image per pixel's r
    gg, bb = np.meshgrid(axis[::2], axis[::2], indexing="ij")  # (401, 401)
    for pix in range(2):
        x = torch.from_numpy(np.stack([np.full_like(gg, r[pix]), gg, bb])[None])  # (1, 3, 401, 401)
        p = params[:, :, :, pix: pix + 1].expand(-1, -1, *gg.shape)
        dens = continuous_mol_log_prob(x, p).exp()[0].numpy()
        total = integrate.trapezoid(integrate.trapezoid(dens, axis[::2], axis=1), axis[::2])
        lp_r = stats.logistic.logpdf(r[pix], means[0, 0, :, 0, pix], scales[0, 0, :, 0, pix])
        p_r = np.exp(special.logsumexp(lp_r + special.log_softmax(logits[0, :, 0, pix])))
        np.testing.assert_allclose(total, p_r, rtol=1e-4)


def test_continuous_rgb_integrates_to_one_3d():
    parts = random_parts(6, n=1, c=3, k=2, h=1, w=1, log_scale=(-0.5, 0.5))
    # h = 0.5 with scales >= 0.6: the trapezoid error on a logistic is ~ exp(-2 pi^2 s / h) ~ e^-23
    axis = np.linspace(-30.0, 30.0, 121)
    gg, bb = torch.meshgrid(torch.from_numpy(axis), torch.from_numpy(axis), indexing="ij")
    params = pack(*parts)
    slabs = []
    for chunk in torch.from_numpy(axis).split(41):
        x = torch.stack([chunk[:, None, None].expand(-1, *gg.shape), gg.expand(len(chunk), -1, -1),
                         bb.expand(len(chunk), -1, -1)], dim=1)  # (chunk, 3, 121, 121)
        slabs.append(continuous_mol_log_prob(x, params.expand(len(chunk), -1, *gg.shape)).exp())
    dens = torch.cat(slabs).numpy()  # (r, g, b)
    total = integrate.trapezoid(integrate.trapezoid(integrate.trapezoid(dens, axis), axis), axis)
    assert abs(total - 1.0) < 1e-4


# ---------------------------------------------------------------- discretized distribution

@pytest.mark.parametrize("channels", [1, 3])
def test_discretized_matches_scipy(channels):
    parts = random_parts(7, n=4, c=channels, log_scale=(-6.0, 1.0))
    idx = torch.randint(0, 256, (4, channels, 2, 3), generator=torch.Generator().manual_seed(8))
    idx[0, :, 0, 0], idx[0, :, 0, 1] = 0, 255  # the two edge bins
    x = GRID[idx]
    got = discretized_mol_log_prob(x, pack(*parts))
    want = np_discretized(x.numpy(), *np_parts(*parts))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-8)


def test_fallback_is_midpoint_density():
    # One component, x = 0 twenty scales above the mean: the bin mass < 1e-5 -> log pdf + log(2/255).
    s, mean = 0.01, -0.2
    params = torch.tensor([0.0, mean, np.log(s)], dtype=F64)[None, :, None, None]
    got = discretized_mol_log_prob(torch.zeros(1, 1, 1, 1, dtype=F64), params).item()
    assert got == pytest.approx(stats.logistic.logpdf(0.0, mean, s) + np.log(2 / 255), abs=1e-10)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(mean=(-5.0, 5.0), log_scale=(-12.0, -6.0)),   # far outside [-1, 1], scales at the clamp
        dict(mean=(-1.0, 1.0), log_scale=(3.0, 6.0)),      # very wide: edge bins hold most mass
        dict(log_scale=(-7.0, 2.0), logit=40.0),           # nearly one-hot weights
    ],
)
def test_discretized_gray_sums_to_one(kw):
    parts = random_parts(9, n=1, c=1, k=4, h=2, w=4, **kw)
    x = GRID[:, None, None, None].expand(-1, 1, 2, 4)  # (256, 1, H, W)
    probs = discretized_mol_log_prob(x, pack(*parts).expand(256, -1, -1, -1)).exp()
    np.testing.assert_allclose(probs.sum(0).numpy(), np.ones((2, 4)), atol=1e-5)


def np_log_bin(v, m, s):
    """(K,) exact discretized log-mass of 8-bit value v under Logistic(m, s) per component."""
    lo = -np.inf if v < -0.999 else v - 1 / 255
    hi = np.inf if v > 0.999 else v + 1 / 255
    mass = np.where(v > m, stats.logistic.sf(lo, m, s) - stats.logistic.sf(hi, m, s),
                    stats.logistic.cdf(hi, m, s) - stats.logistic.cdf(lo, m, s))
    return np.log(np.maximum(mass, 1e-300))


@pytest.mark.parametrize("kw", [dict(), dict(mean=(-4.0, 4.0), log_scale=(-10.0, 4.0), logit=20.0)])
def test_discretized_rgb_conditionals_sum(kw):
    # Full 256^3 sums are too slow here; instead, for fixed (r, g) (edges included):
    # sum_b P(r, g, b) = P(r, g) and sum_{g, b} P(r, g, b) = P(r), with P(r, g), P(r) from scipy.
    # Together with the 1-D normalisation of P(r) this is the normalisation of the joint.
    parts = random_parts(10, n=1, c=3, k=3, h=1, w=1, **kw)
    logits, means, scales, coeffs = (a[0, ..., 0, 0] for a in np_parts(*parts))  # (K,), (3, K) ...
    log_w = special.log_softmax(logits)
    gg, bb = torch.meshgrid(GRID, GRID, indexing="ij")
    for i_r, i_g in [(37, 250), (0, 255), (255, 0), (128, 128)]:
        r, g = GRID[i_r].item(), GRID[i_g].item()
        x = torch.stack([torch.full_like(gg, r), gg, bb])[None]  # (1, 3, 256, 256): rows g, columns b
        probs = discretized_mol_log_prob(x, pack(*parts).expand(-1, -1, 256, 256)).exp()[0].numpy()
        lp_r = np_log_bin(r, means[0], scales[0])
        lp_g = np_log_bin(g, means[1] + coeffs[0] * r, scales[1])
        want_rg, want_r = np.exp(special.logsumexp(log_w + lp_r + lp_g)), np.exp(special.logsumexp(log_w + lp_r))
        np.testing.assert_allclose(probs[i_g].sum(), want_rg, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(probs.sum(), want_r, rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------- gradients at extremes

EXTREME_LOG_SCALES = [-30.0, -7.0, 0.0, 30.0]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["continuous", "discretized"])
def test_gradients_finite_at_extremes(channels, kind):
    k = 4
    values = [-50.0, -1.0, 0.0, 1.0, 50.0] if kind == "continuous" else [-1.0, -1.0 + 2 / 255, 0.0, 1.0]
    x = torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, channels, 1, 1)
    n = len(values)
    logits = torch.tensor([100.0, -100.0, 0.0, 50.0]).expand(n, k)[..., None, None]
    means = torch.tensor([-3.0, 0.0, 3.0, 1.0]).expand(n, channels, k)[..., None, None]
    log_scales = torch.tensor(EXTREME_LOG_SCALES).expand(n, channels, k)[..., None, None]
    coeffs = torch.tensor([-20.0, 0.5, 20.0, 0.0]).expand(n, 3, k)[..., None, None] if channels == 3 else None
    params = pack(logits, means, log_scales, coeffs).clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    fn = continuous_mol_log_prob if kind == "continuous" else discretized_mol_log_prob
    out = fn(x, params)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(params.grad).all() and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- samplers

SAMPLERS = [sample_continuous_mol, sample_discretized_mol]


def test_draw_uniforms_shapes_and_range():
    gen = torch.Generator().manual_seed(0)
    u_comp, u_value = draw_uniforms(3, 3, 5, 4, 2, generator=gen, dtype=F64)
    assert u_comp.shape == (3, 5, 4, 2) and u_value.shape == (3, 3, 4, 2)
    for u in (u_comp, u_value):
        assert u.dtype == F64 and 0 < u.min() and u.max() < 1
    again = draw_uniforms(3, 3, 5, 4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(again[0], u_comp) and torch.equal(again[1], u_value)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("channels", [1, 3])
def test_sampler_reproducible_and_per_pixel(sampler, channels):
    params = pack(*random_parts(12, n=2, c=channels, k=3, h=3, w=4))
    u = draw_uniforms(2, channels, 3, 3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    full = sampler(params, channels=channels, uniforms=u)
    assert full.shape == (2, channels, 3, 4)
    assert torch.equal(full, sampler(params, channels=channels, uniforms=u))
    by_gen = sampler(params, channels=channels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(full, by_gen)
    for n, h, w in [(0, 0, 0), (1, 2, 3), (1, 1, 2)]:
        sl = (slice(n, n + 1), slice(None), slice(h, h + 1), slice(w, w + 1))
        one = sampler(params[sl], channels=channels, uniforms=(u[0][sl], u[1][sl]))
        assert torch.equal(one, full[sl])
    with pytest.raises(ValueError):
        sampler(params, channels=channels, uniforms=u, temperature=0.0)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_continuous_gray_samples_match_cdf(temperature):
    logits, means, scales = np.array([0.5, -0.3, 1.0]), np.array([-2.0, 0.5, 3.0]), np.array([0.3, 1.0, 0.05])
    parts = (torch.tensor(logits)[None, :, None, None], torch.tensor(means)[None, None, :, None, None],
             torch.tensor(np.log(scales))[None, None, :, None, None])
    m = 20_000
    x = sample_continuous_mol(pixel_params(parts, m), channels=1, generator=torch.Generator().manual_seed(13),
                              temperature=temperature)
    cdf = lambda v: mixture_cdf(v, logits / temperature, means, scales * temperature)  # noqa: E731
    assert stats.kstest(x.flatten().numpy(), cdf).pvalue > 1e-3
    # a wrong temperature must be rejected (the test has power)
    if temperature != 1.0:
        assert stats.kstest(x.flatten().numpy(), lambda v: mixture_cdf(v, logits, means, scales)).pvalue < 1e-6


def test_continuous_rgb_samples_residuals_are_logistic():
    # K = 1: g - mu_g - a r ~ Logistic(0, s_g) and b - mu_b - b' r - c g ~ Logistic(0, s_b).
    parts = random_parts(14, n=1, c=3, k=1, h=1, w=1, log_scale=(-1.0, 0.5))
    means, scales, coeffs = (a[0, :, 0, 0, 0] for a in np_parts(*parts)[1:])
    x = sample_continuous_mol(pixel_params(parts, 20_000), channels=3,
                              generator=torch.Generator().manual_seed(15))[:, :, 0, 0].numpy()
    residuals = [x[:, 0] - means[0], x[:, 1] - means[1] - coeffs[0] * x[:, 0],
                 x[:, 2] - means[2] - coeffs[1] * x[:, 0] - coeffs[2] * x[:, 1]]
    for res, s in zip(residuals, scales):
        assert stats.kstest(res, stats.logistic(scale=s).cdf).pvalue > 1e-3


def test_discretized_gray_samples_match_probabilities():
    parts = random_parts(16, n=1, c=1, k=3, h=1, w=1, mean=(-1.1, 1.1), log_scale=(-3.0, -1.5))
    m = 50_000
    x = sample_discretized_mol(pixel_params(parts, m), channels=1, generator=torch.Generator().manual_seed(17))
    v = torch.round((x.flatten() + 1) * 127.5)
    assert torch.equal(x.flatten(), v / 127.5 - 1) and v.min() >= 0 and v.max() <= 255
    observed = np.bincount(v.long().numpy(), minlength=256)
    probs = discretized_mol_log_prob(GRID[:, None, None, None], pixel_params(parts, 256)).exp().flatten().numpy()
    assert chi2_pvalue(observed, m * probs) > 1e-3
    assert 0.5 * np.abs(observed / m - probs).sum() < 0.02


def rgb_chi2_pvalue(x, parts):
    """Chi-square of 8-bit RGB samples x (M, 3, 1, 1) against exp(discretized_mol_log_prob).

    Cells: every value triple of a box (per-channel 0.5%..99.5% sample quantiles), plus one
    cell for everything outside it; cells are fixed before counting, so pooling is unbiased.
    """
    m = len(x)
    v = torch.round((x[:, :, 0, 0] + 1) * 127.5).long().numpy()  # (M, 3)
    lo, hi = np.quantile(v, 0.005, axis=0).astype(int), np.quantile(v, 0.995, axis=0).astype(int)
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    box = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # (cells, 3)
    xc = GRID[torch.from_numpy(box)][:, :, None, None]  # (cells, 3, 1, 1)
    probs = discretized_mol_log_prob(xc, pixel_params(parts, len(box))).exp().flatten().numpy()
    inside = np.all((v >= lo) & (v <= hi), axis=1)
    flat = np.ravel_multi_index((v[inside] - lo).T, [len(a) for a in axes])
    observed = np.append(np.bincount(flat, minlength=len(box)), (~inside).sum())
    return chi2_pvalue(observed, m * np.append(probs, 1.0 - probs.sum()))


def test_discretized_rgb_samples_match_probabilities():
    # Scales of half a bin and |coeffs| ~ 1: conditioning G and B on the *unrounded* R, G would
    # shift their means by up to a scale; the second assertion shows the test detects that.
    parts = (torch.tensor([0.3, -0.2], dtype=F64)[None, :, None, None],
             torch.tensor([[0.1, -0.3], [0.05, 0.2], [-0.1, 0.3]], dtype=F64)[None, :, :, None, None],
             torch.full((1, 3, 2, 1, 1), -5.5, dtype=F64),
             torch.tensor([[3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]], dtype=F64)[None, :, :, None, None])
    params = pixel_params(parts, 50_000)
    x = sample_discretized_mol(params, channels=3, generator=torch.Generator().manual_seed(19))
    assert rgb_chi2_pvalue(x, parts) > 1e-3
    y = sample_continuous_mol(params, channels=3, generator=torch.Generator().manual_seed(19))
    wrong = torch.round((y.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1  # rounded only at the end
    assert rgb_chi2_pvalue(wrong, parts) < 1e-6


def test_discretized_float32_close_to_float64():
    # Bin masses are differenced on the tail side of the mean, so float32 keeps ~1e-4 nats
    # in the upper tail too (a plain sigmoid difference near 1 loses most digits there).
    parts = random_parts(20, n=1, c=3, k=4, h=4, w=4, mean=(-1.5, 1.5), log_scale=(-7.0, 1.0))
    x = GRID[torch.randint(0, 256, (64, 3, 4, 4), generator=torch.Generator().manual_seed(21))]
    params = pack(*parts).expand(64, -1, -1, -1)
    got = discretized_mol_log_prob(x.float(), params.float()).double()
    assert (got - discretized_mol_log_prob(x, params)).abs().max() < 1e-3
