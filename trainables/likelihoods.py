"""Logistic-mixture likelihoods of PixelCNN++ and their samplers, as pure tensor functions.

Two distributions share one parameterisation (Salimans et al. 2017):

- the *continuous* mixture of logistics, a density with unbounded support, for the
  smoothed data x~ = x + sigma * eps (Meng et al. 2021);
- the *discretized* mixture of logistics, a distribution over the 256 values
  v / 127.5 - 1 (v = 0..255) of 8-bit images scaled to [-1, 1].

Every log-likelihood is in nats, per pixel and joint over the pixel's channels. Nothing
here picks a device: outputs live where the inputs live.

Parameter layout. The network outputs `params` of shape (N, P, H, W) with
P = mixture_param_count(C, K) = K * (1 + 2C + C(C-1)/2), i.e. 3K for C = 1 and 10K for C = 3.
Along dim 1, "what-major, then channel, then component":

    params[:, k]                      logit_probs, component k          (K rows)
    params[:, K * (1 + c) + k]        means of channel c                (C*K rows)
    params[:, K * (1 + C + c) + k]    log_scales of channel c           (C*K rows)
    params[:, K * (1 + 2C + j) + k]   coeffs j (pre-tanh), C = 3 only   (3*K rows)

so params[:, K:] reshapes to (N, 2 + (C == 3), C, K, H, W). The coupling coefficients
are j = 0: a (G on R), j = 1: b (B on R), j = 2: c (B on G), as in PixelCNN++.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SCALE_MIN = -7.0      # PixelCNN++'s floor on log_scales: keeps 1/s <= e^7
BIN_HALF_WIDTH = 1.0 / 255.0  # the 8-bit grid on [-1, 1] has spacing 2/255
EDGE_THRESHOLD = 0.999    # x beyond +-0.999 lies in an edge bin (PixelCNN++)
UNDERFLOW_MASS = 1e-5     # below this bin mass, use the mid-point density (PixelCNN++)
UNIFORM_CLAMP = 1e-5      # uniforms live in [1e-5, 1 - 1e-5]: logs stay finite
LOG_HALF_RANGE = math.log(127.5)  # -log(bin width 2/255)


# The randomness of one sampler call (draw_uniforms): (u_component (N, K, H, W), u_value (N, C, H, W)).
Uniforms = tuple[Tensor, Tensor]


class MixtureParams(NamedTuple):
    """Unpacked mixture parameters; K components, C channels."""

    logit_probs: Tensor         # (N, K, H, W) unnormalised log mixture weights
    means: Tensor               # (N, C, K, H, W) before channel coupling
    log_scales: Tensor          # (N, C, K, H, W) clamped at >= LOG_SCALE_MIN
    coeffs: Optional[Tensor]    # (N, 3, K, H, W) in (-1, 1) after tanh; None when C = 1


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")


def mixture_param_count(channels: int, num_mixtures: int) -> int:
    """P, the number of output maps the network needs: 3K for C = 1, 10K for C = 3."""
    _check_channels(channels)
    return num_mixtures * (3 if channels == 1 else 10)


def unpack_params(params: Tensor, *, channels: int) -> MixtureParams:
    """Split network output params (N, P, H, W) into a MixtureParams (layout: module doc)."""
    _check_channels(channels)
    n, p, h, w = params.shape
    per_component = mixture_param_count(channels, 1)
    if p % per_component:
        raise ValueError(f"params has {p} maps; C={channels} needs a multiple of {per_component}")
    k = p // per_component
    rest = params[:, k:].reshape(n, per_component - 1, k, h, w)  # (N, 2C [+3], K, H, W)
    log_scales = rest[:, channels: 2 * channels].clamp(min=LOG_SCALE_MIN)
    coeffs = torch.tanh(rest[:, 2 * channels:]) if channels == 3 else None
    return MixtureParams(params[:, :k], rest[:, :channels], log_scales, coeffs)


def autoregressive_means(x: Tensor, *, means: Tensor, coeffs: Optional[Tensor]) -> Tensor:
    """Channel-coupled means: mean_r = mu_r, mean_g = mu_g + a x_r, mean_b = mu_b + b x_r + c x_g.

    means (N, C, *S) and coeffs (N, 3, *S) (or None: gray, returned unchanged); x is
    (N, C, *S') broadcastable against them, e.g. (N, C, 1, H, W) against (N, C, K, H, W).
    Channel c's mean reads only x[:, :c], so a partially sampled x may hold anything later.
    """
    if coeffs is None:
        return means
    x_r, x_g = x[:, 0], x[:, 1]
    mean_g = means[:, 1] + coeffs[:, 0] * x_r
    mean_b = means[:, 2] + coeffs[:, 1] * x_r + coeffs[:, 2] * x_g
    return torch.stack([means[:, 0], mean_g.expand_as(means[:, 0]), mean_b.expand_as(means[:, 0])], dim=1)


def _logistic_log_pdf(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log Logistic(x; mean, s) = -z - log s - 2 softplus(-z), z = (x - mean)/s; stable for any z."""
    z = (x - mean) * torch.exp(-log_scale)
    return -z - log_scale - 2.0 * F.softplus(-z)


def _mixture_log_sum(log_prob_components: Tensor, logit_probs: Tensor) -> Tensor:
    """log sum_k pi_k exp(l_k): (N, K, H, W) per-component logs -> (N, H, W)."""
    return torch.logsumexp(log_prob_components + F.log_softmax(logit_probs, dim=1), dim=1)


def continuous_mol_log_prob(x: Tensor, params: Tensor) -> Tensor:
    """Log-density (nats) of a continuous logistic mixture, per pixel, joint over channels.

    x: (N, C, H, W), any real values (smoothed data is not clamped); params: (N, P, H, W).
    Returns (N, H, W): log sum_k pi_k prod_c Logistic(x_c; mean_kc(x_<c), s_kc).
    The density is w.r.t. Lebesgue measure on the [-1, 1] data scale (see bpd.bits_per_dim).
    """
    mix = unpack_params(params, channels=x.shape[1])
    x = x.unsqueeze(2)  # (N, C, 1, H, W) against (N, C, K, H, W)
    means = autoregressive_means(x, means=mix.means, coeffs=mix.coeffs)
    log_pdf = _logistic_log_pdf(x, means, mix.log_scales).sum(dim=1)  # (N, K, H, W)
    return _mixture_log_sum(log_pdf, mix.logit_probs)


def discretized_mol_log_prob(x: Tensor, params: Tensor) -> Tensor:
    """Log-probability (nats) of 8-bit data under the discretized logistic mixture.

    x: (N, C, H, W) on the grid v / 127.5 - 1, v = 0..255; params: (N, P, H, W).
    Returns (N, H, W), per pixel, joint over channels. Each value owns the bin
    [x - 1/255, x + 1/255]; the bins of -1 and 1 extend to -inf and +inf, so the 256
    probabilities sum to 1. As in PixelCNN++, when a bin's CDF difference is below 1e-5
    (where float32 loses it) the mass is replaced by the mid-point rule
    pdf(x) * 2/255, i.e. log pdf(x) - log(127.5); this changes the total by far less
    than 1e-5 per bin. We compute the CDF difference on the tail side of the mean
    (sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a)), which is the same number but
    keeps float32 precision in the upper tail.
    """
    mix = unpack_params(params, channels=x.shape[1])
    x = x.unsqueeze(2)  # (N, C, 1, H, W)
    means = autoregressive_means(x, means=mix.means, coeffs=mix.coeffs)  # (N, C, K, H, W)
    inv_s = torch.exp(-mix.log_scales)
    centered = x - means
    plus_in = inv_s * (centered + BIN_HALF_WIDTH)   # standardized upper bin edge
    min_in = inv_s * (centered - BIN_HALF_WIDTH)    # standardized lower bin edge
    mid_in = inv_s * centered
    log_cdf_plus = plus_in - F.softplus(plus_in)    # log sigmoid: the bin of -1 (down to -inf)
    log_sf_min = -F.softplus(min_in)                # log(1 - sigmoid): the bin of 1 (up to +inf)
    upper = mid_in > 0
    cdf_delta = torch.where(
        upper, torch.sigmoid(-min_in) - torch.sigmoid(-plus_in), torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    )
    log_pdf_mid = mid_in - mix.log_scales - 2.0 * F.softplus(mid_in)
    log_inner = torch.where(
        cdf_delta > UNDERFLOW_MASS, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - LOG_HALF_RANGE
    )
    log_probs = torch.where(x > EDGE_THRESHOLD, log_sf_min, log_inner)
    log_probs = torch.where(x < -EDGE_THRESHOLD, log_cdf_plus, log_probs)
    return _mixture_log_sum(log_probs.sum(dim=1), mix.logit_probs)


def draw_uniforms(
    n: int,
    channels: int,
    num_mixtures: int,
    height: int,
    width: int,
    *,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: Optional[torch.dtype] = None,
) -> Uniforms:
    """The randomness of one sampler call: (u_component (N, K, H, W), u_value (N, C, H, W)).

    Values in [1e-5, 1 - 1e-5] (the logistic tails beyond ~11.5 scales are cut, mass 2e-5).
    Drawn in this order on the generator's device (the given device without a generator),
    then moved to `device`: a CPU generator gives the same numbers whatever runs the model.
    """
    source = generator.device if generator is not None else device
    shapes = ((n, num_mixtures, height, width), (n, channels, height, width))
    out = []
    for shape in shapes:
        u = torch.rand(shape, generator=generator, device=source, dtype=dtype).clamp_(UNIFORM_CLAMP, 1 - UNIFORM_CLAMP)
        out.append(u if device is None else u.to(device))
    return out[0], out[1]


def _quantize(y: Tensor) -> Tensor:
    """Clamp to [-1, 1] and round to the nearest 8-bit grid value v / 127.5 - 1."""
    return torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def _sample_mol(
    params: Tensor, channels: int, uniforms, generator, temperature: float, quantize: bool
) -> Tensor:
    """Shared sampler: Gumbel-max component, then channels in order by inverse CDF.

    Every operation is per pixel, so pixel (n, h, w) depends only on
    uniforms[0][n, :, h, w] and uniforms[1][n, :, h, w].
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mix = unpack_params(params, channels=channels)
    n, k, h, w = mix.logit_probs.shape
    if uniforms is None:
        uniforms = draw_uniforms(n, channels, k, h, w, generator=generator, device=params.device, dtype=params.dtype)
    u_comp, u_value = uniforms
    if u_comp.shape != (n, k, h, w) or u_value.shape != (n, channels, h, w):
        raise ValueError(f"uniforms must have shapes {(n, k, h, w)} and {(n, channels, h, w)}")
    gumbel = -torch.log(-torch.log(u_comp))  # (N, K, H, W)
    component = torch.argmax(mix.logit_probs / temperature + gumbel, dim=1, keepdim=True)  # (N, 1, H, W)

    def pick(t: Tensor) -> Tensor:  # (N, C', K, H, W) -> (N, C', H, W) at the chosen component
        return t.gather(2, component.unsqueeze(1).expand(n, t.shape[1], 1, h, w)).squeeze(2)

    means, log_scales = pick(mix.means), pick(mix.log_scales)
    coeffs = pick(mix.coeffs) if mix.coeffs is not None else None
    # Logistic inverse CDF: s * T * logit(u), (N, C, H, W).
    noise = torch.exp(log_scales) * temperature * (torch.log(u_value) - torch.log1p(-u_value))
    values: list[Tensor] = []
    for c in range(channels):
        # Channels not yet drawn are zeros; channel c's mean reads only channels < c.
        partial = torch.stack(values + [torch.zeros_like(noise[:, 0])] * (channels - c), dim=1)
        y = autoregressive_means(partial, means=means, coeffs=coeffs)[:, c] + noise[:, c]
        values.append(_quantize(y) if quantize else y)
    return torch.stack(values, dim=1)


def sample_continuous_mol(
    params: Tensor,
    *,
    channels: int,
    uniforms: Optional[tuple[Tensor, Tensor]] = None,
    generator: Optional[torch.Generator] = None,
    temperature: float = 1.0,
) -> Tensor:
    """Draw x (N, C, H, W) from the continuous logistic mixture given params (N, P, H, W).

    Component k by Gumbel-max on logit_probs / temperature, then R, G, B in order:
    x_c = mean_c(x_<c) + s_c * temperature * (log u - log(1 - u)). Not clamped.
    `uniforms` (see draw_uniforms) fixes the randomness; otherwise they are drawn with
    `generator`. temperature = 1 samples the model exactly (up to the uniform clamp).
    """
    return _sample_mol(params, channels, uniforms, generator, temperature, quantize=False)


def sample_discretized_mol(
    params: Tensor,
    *,
    channels: int,
    uniforms: Optional[tuple[Tensor, Tensor]] = None,
    generator: Optional[torch.Generator] = None,
    temperature: float = 1.0,
) -> Tensor:
    """Draw 8-bit x (N, C, H, W) on the grid v / 127.5 - 1 from the discretized mixture.

    As sample_continuous_mol, but each channel is clamped to [-1, 1] and rounded to the
    nearest grid value before the next channel conditions on it. A logistic draw lands
    in value v's bin with exactly the discretized probability (the edge bins absorb the
    tails), so at temperature 1 this samples discretized_mol_log_prob's distribution
    (up to the uniform clamp and the < 1e-5 mid-point fallback bins).
    """
    return _sample_mol(params, channels, uniforms, generator, temperature, quantize=True)
