"""bits/dim units and the two-step bound against closed-form Gaussian cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from trainables.quality.bpd import bits_per_dim, gaussian_log_prob, two_step_bound_nats
from trainables.likelihoods import continuous_mol_log_prob, discretized_mol_log_prob

F64 = torch.float64


# ---------------------------------------------------------------- bits per dim

def test_uniform_density_on_unit_interval_is_log2_255_bits():
    # p = 1/2 on [-1, 1] is the uniform density on [0, 255] on the 8-bit scale: log2(255) bits.
    d = 784
    assert bits_per_dim(d * math.log(2.0), d, continuous=True) == pytest.approx(math.log2(255.0), abs=1e-12)
    assert bits_per_dim(d * math.log(2.0), d, continuous=True) == pytest.approx(7.99435, abs=1e-5)
    # a uniform distribution over the 256 values is 8 bits per dimension
    assert bits_per_dim(d * math.log(256.0), d, continuous=False) == pytest.approx(8.0, abs=1e-12)


def test_bits_per_dim_on_tensors():
    nll = torch.tensor([0.0, 10.0, 64 * math.log(2.0)], dtype=F64)
    out = bits_per_dim(nll, 64, continuous=False)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([0.0, 10.0 / (64 * math.log(2.0)), 1.0], dtype=F64))
    torch.testing.assert_close(bits_per_dim(nll, 64, continuous=True) - out, torch.full((3,), math.log2(127.5),
                                                                                         dtype=F64))


def test_continuous_and_discretized_bpd_agree_for_a_smooth_density():
    # A wide logistic (s = 0.4): bin mass ~ density * 2/255, so the discrete bits/dim of an interior
    # 8-bit value equals the continuous bits/dim with the log2(127.5) term, to O((bin / s)^2).
    params = torch.tensor([0.0, 0.1, math.log(0.4)], dtype=F64)[None, :, None, None].expand(40, -1, -1, -1)
    x = (torch.arange(40, dtype=F64) * 5 + 30) / 127.5 - 1  # interior grid values
    x = x[:, None, None, None]
    discrete = bits_per_dim(-discretized_mol_log_prob(x, params).flatten(), 1, continuous=False)
    continuous = bits_per_dim(-continuous_mol_log_prob(x, params).flatten(), 1, continuous=True)
    torch.testing.assert_close(discrete, continuous, rtol=0, atol=1e-4)


def test_gaussian_log_prob_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x, mean = torch.randn((3, 2, 4, 5), generator=g, dtype=F64), torch.randn((3, 2, 4, 5), generator=g, dtype=F64)
    want = stats.norm.logpdf(x.numpy(), mean.numpy(), 0.3).reshape(3, -1).sum(1)
    np.testing.assert_allclose(gaussian_log_prob(x, mean, 0.3).numpy(), want, rtol=1e-12)


# ---------------------------------------------------------------- two-step bound, Gaussian cases
# Data x ~ N(0, 1) per dimension, q(x~ | x) = N(x, s^2). The true smoothed density is N(0, 1 + s^2)
# and the exact denoiser is the posterior N(x; x~ / (1 + s^2), s^2 / (1 + s^2)).

S = 0.5
V_TRUE = 1 + S**2


def normal_log_pdf(x, mean, var):
    """Per-image sum of log N(x; mean, var) over all but the first axis, written out by hand."""
    return (-0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(1)


def exact_denoiser(x, x_noisy):
    return normal_log_pdf(x, x_noisy / V_TRUE, S**2 / V_TRUE)


def data(n=6, d=3):
    return torch.randn((n, 1, 1, d), generator=torch.Generator().manual_seed(1), dtype=F64)  # (N, C, H, W)


@pytest.mark.parametrize("num_draws", [1, 5])
def test_bound_is_exact_with_the_true_smoothed_model_and_posterior(num_draws):
    # p(x~) P(x | x~) / q(x~ | x) = N(x; 0, 1) for every x~: the integrand is constant, the bound tight.
    x = data()
    bound = two_step_bound_nats(
        x, smoothed_log_prob=lambda xn: normal_log_pdf(xn, 0.0, V_TRUE), denoiser_log_prob=exact_denoiser,
        noise_std=S, num_draws=num_draws, generator=torch.Generator().manual_seed(2),
    )
    torch.testing.assert_close(bound, -normal_log_pdf(x, 0.0, 1.0), rtol=0, atol=1e-10)


def test_bound_with_a_wrong_smoothed_model_matches_its_closed_form():
    # With p(x~) = N(0, v), v != 1 + s^2, the integrand is -log N(x; 0, 1) + log N(x~; 0, 1+s^2) - log N(x~; 0, v)
    # = const + beta x~^2, so E_q and the per-draw variance are closed-form (E x~^2 = x^2 + s^2).
    v, m = 2.5, 4000
    x = data()
    bound = two_step_bound_nats(
        x, smoothed_log_prob=lambda xn: normal_log_pdf(xn, 0.0, v), denoiser_log_prob=exact_denoiser,
        noise_std=S, num_draws=m, generator=torch.Generator().manual_seed(3),
    ).numpy()
    xs = x.flatten(1).numpy()  # (N, D)
    second = xs**2 + S**2
    gap = (0.5 * math.log(v / V_TRUE) + second * (1 / (2 * v) - 1 / (2 * V_TRUE))).sum(1)
    exact = -normal_log_pdf(x, 0.0, 1.0).numpy() + gap
    beta = 1 / (2 * v) - 1 / (2 * V_TRUE)
    std_err = np.sqrt((beta**2 * (4 * xs**2 * S**2 + 2 * S**4)).sum(1) / m)
    assert np.all(np.abs(bound - exact) < 4 * std_err)

    # The bound is on the two-step model's own -log P(x): P(x) = int N(x~; 0, v) N(x; a x~, t2) dx~
    # = N(x; 0, a^2 v + t2); the slack is KL(q(x~|x) || the model's posterior of x~ given x).
    a, t2 = 1 / V_TRUE, S**2 / V_TRUE
    model_nll = -normal_log_pdf(x, 0.0, a**2 * v + t2).numpy()
    post_var = 1 / (1 / v + a**2 / t2)
    post_mean = post_var * a * xs / t2
    kl = (0.5 * np.log(post_var / S**2) + (S**2 + (xs - post_mean) ** 2) / (2 * post_var) - 0.5).sum(1)
    np.testing.assert_allclose(exact - model_nll, kl, rtol=1e-10, atol=1e-12)
    assert np.all(exact >= model_nll) and np.all(bound >= model_nll - 4 * std_err)


def test_bound_is_reproducible_and_validates_arguments():
    x = data()
    kw = dict(smoothed_log_prob=lambda xn: normal_log_pdf(xn, 0.0, 2.0), denoiser_log_prob=exact_denoiser,
              noise_std=S, num_draws=3)
    first = two_step_bound_nats(x, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(first, two_step_bound_nats(x, generator=torch.Generator().manual_seed(4), **kw))
    assert first.shape == (6,)
    assert torch.isfinite(two_step_bound_nats(x, generator=None, **kw)).all()
    with pytest.raises(ValueError):
        two_step_bound_nats(x, generator=None, **{**kw, "num_draws": 0})
    with pytest.raises(ValueError):
        two_step_bound_nats(x, generator=None, **{**kw, "noise_std": 0.0})


def test_batched_bound_equals_the_looped_one_with_real_models():
    """All draws in one call per model (D * N images) against one call per draw: the same draws,
    summed in the same order; only the models' batch size differs."""
    from trainables.losses import DenoiserNLL, SmoothedNLL
    from trainables.pixelcnnpp import PixelCNNpp

    torch.manual_seed(0)
    smoothed, denoiser = PixelCNNpp(1, 8, 1, 3).eval(), PixelCNNpp(1, 8, 1, 3, conditional=True).eval()
    x = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(1)).float() / 127.5 - 1
    calls = []

    def smoothed_log_prob(z):
        calls.append(z.shape[0])
        return -SmoothedNLL()(smoothed, None, z)

    bounds = {}
    with torch.no_grad():
        for batched in (False, True):
            calls.clear()
            bounds[batched] = two_step_bound_nats(
                x, smoothed_log_prob=smoothed_log_prob,
                denoiser_log_prob=lambda clean, z: -DenoiserNLL()(denoiser, clean, z),
                noise_std=0.3, num_draws=3, generator=torch.Generator().manual_seed(2), batched=batched)
            assert calls == ([15] if batched else [5, 5, 5])
    torch.testing.assert_close(bounds[True], bounds[False], rtol=1e-5, atol=1e-4)
    assert bounds[True].shape == (5,) and torch.isfinite(bounds[True]).all()
