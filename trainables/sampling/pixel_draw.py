"""The draw of one pixel from its mixture parameters, for the fast sampler's inner loop.

`likelihoods._sample_mol` draws a whole (N, P, H, W) map: it unpacks the parameters,
transforms the uniforms (Gumbel noise for the component, the logistic quantile for the
value) and gathers the chosen component, about 30 tensor operations, each with the fixed
cost of a call. Called once per pixel that cost dominates the draw. `PixelDraw` does the
same arithmetic in the same order, with the uniforms transformed once for the whole image
and the chosen component's parameters gathered in one operation: the same values up to
float rounding (the transforms run vectorized over the image instead of per pixel).
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainables.likelihoods import LOG_SCALE_MIN, Uniforms, mixture_param_count


class PixelDraw:
    """draw(params (N, P), i, j) -> the pixel (N, C), as `_sample_mol` draws it from params
    at (i, j) with `uniforms` (u_component (N, K, H, W), u_value (N, C, H, W))."""

    def __init__(self, uniforms: Uniforms, channels: int, temperature: float, quantize: bool):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        u_comp, u_value = uniforms
        self.channels, self.temperature, self.quantize = channels, temperature, quantize
        self.k = u_comp.shape[1]
        self.rest = mixture_param_count(channels, 1) - 1  # means, log scales (and coefficients) per component
        # Pixel-major copies, so that a pixel's noise is one contiguous (N, .) view.
        self.gumbel = (-torch.log(-torch.log(u_comp))).permute(2, 3, 0, 1).contiguous()  # (H, W, N, K)
        self.logit_u = (torch.log(u_value) - torch.log1p(-u_value)).permute(2, 3, 0, 1).contiguous()  # (H, W, N, C)
        # The current row's noise, copied into buffers made once (begin_row): a draw reads the same
        # places at every row, as a replayed CUDA graph of a pixel step must (pixel_steps.py).
        self.gumbel_row, self.logit_u_row = self.gumbel[0].clone(), self.logit_u[0].clone()
        self.gumbel_cols, self.logit_u_cols = self.gumbel_row.unbind(0), self.logit_u_row.unbind(0)
        self.row = 0

    def begin_row(self, i: int) -> None:
        """Make row i's noise the current row's."""
        self.gumbel_row.copy_(self.gumbel[i])
        self.logit_u_row.copy_(self.logit_u[i])
        self.row = i

    def __call__(self, params: Tensor, i: int, j: int) -> Tensor:
        if i != self.row:
            self.begin_row(i)
        n, k, c = params.shape[0], self.k, self.channels
        logits = params[:, :k] if self.temperature == 1.0 else params[:, :k] / self.temperature
        component = torch.argmax(logits + self.gumbel_cols[j], dim=1)  # (N,)
        rest = params[:, k:].view(n, self.rest, k)
        chosen = rest.gather(2, component.view(n, 1, 1).expand(n, self.rest, 1)).view(n, self.rest)
        means, log_scales = chosen[:, :c], chosen[:, c : 2 * c].clamp(min=LOG_SCALE_MIN)
        scale = torch.exp(log_scales)
        if self.temperature != 1.0:
            scale = scale * self.temperature
        noise = scale * self.logit_u_cols[j]  # (N, C)
        if c == 1:
            return self._finish(means + noise)
        coeffs = torch.tanh(chosen[:, 2 * c :])  # (N, 3)
        red = self._finish(means[:, 0] + noise[:, 0])
        green = self._finish(means[:, 1] + coeffs[:, 0] * red + noise[:, 1])
        blue = self._finish(means[:, 2] + coeffs[:, 1] * red + coeffs[:, 2] * green + noise[:, 2])
        return torch.stack([red, green, blue], dim=1)

    def _finish(self, y: Tensor) -> Tensor:
        """likelihoods._quantize where the draw is discretized."""
        if not self.quantize:
            return y
        return torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0
