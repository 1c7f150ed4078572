"""The denoiser's view of the noisy image: x~ through an unshifted conv U-net.

p(x | x~) may look at all of x~ (it is given, not generated), so this path has no
causal shifts: 3x3 'same'-padded convolutions over x~ (N, C, H, W) give features at
the three resolutions of PixelCNN++ (H, H/2, H/4), which every gated resnet of that
level adds before its gate (layers.GatedResnet, `cond`). The causal network itself
sees only x, so the causal structure over x is the unconditional one by construction.

Coverage of all of x~ is by construction too, at any size: the coarsest level adds a
summary of its features' spatial mean (a global term, like the class vector `h` of the
official PixelCNN++ code's conditional models), and every finer level adds the
upsampled coarser one. Locally, the convolutions keep x~ aligned with x: the features
at (i, j) come mostly from x~ near (i, j), the pixel the denoiser most needs.

The other design, x~ stacked above x (denoiser_conditioning="stacked"), has no path of its
own; what it sees of x~ is its receptive field, computed exactly below (stacked_dependencies).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from trainables.layers import DownShiftedDeconv2d, NetworkInNetwork, concat_elu, down_shift, right_shift


class SameConv2d(nn.Module):
    """A weight-normalised 3x3 convolution, zero-padded by 1: output (i, j) reads input
    rows s*i-1..s*i+1 and columns s*j-1..s*j+1 (s = stride); size H -> H / s for even H."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = weight_norm(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Resnet(nn.Module):
    """x + conv(concat_elu(conv(concat_elu(x)))), unshifted; (N, F, H, W) -> same."""

    def __init__(self, num_filters: int):
        super().__init__()
        self.conv_input = SameConv2d(2 * num_filters, num_filters)
        self.conv_out = SameConv2d(2 * num_filters, num_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(concat_elu(self.conv_input(concat_elu(x))))


class NoisyImageEncoder(nn.Module):
    """x~ (N, C, H, W) -> [features (N, F, H / 2^s, W / 2^s) for s = 0 .. levels - 1].

    Down: `nr_resnet` resnets per level, stride-2 convs between levels; at the coarsest
    level a global term nin(concat_elu(mean over H, W)) is broadcast and added; up:
    nearest-neighbour upsampling added to the level's down-pass features, then
    `nr_resnet` resnets. Every output feature depends on every pixel of x~.
    """

    def __init__(self, in_channels: int, nr_filters: int, nr_resnet: int, levels: int):
        super().__init__()
        f = nr_filters
        self.init = SameConv2d(in_channels + 1, f)  # +1: a "ones" channel marks the zero padding
        self.down = nn.ModuleList(nn.Sequential(*(Resnet(f) for _ in range(nr_resnet))) for _ in range(levels))
        self.downsize = nn.ModuleList(SameConv2d(f, f, stride=2) for _ in range(levels - 1))
        self.global_term = NetworkInNetwork(2 * f, f)
        self.up = nn.ModuleList(nn.Sequential(*(Resnet(f) for _ in range(nr_resnet))) for _ in range(levels - 1))

    def forward(self, x_noisy: torch.Tensor) -> list[torch.Tensor]:
        ones = torch.ones_like(x_noisy[:, :1])
        h = self.init(torch.cat([x_noisy, ones], dim=1))  # (N, F, H, W)
        skips = []
        for s, blocks in enumerate(self.down):
            if s:
                h = self.downsize[s - 1](h)  # (N, F, H / 2^s, W / 2^s)
            h = blocks(h)
            skips.append(h)
        summary = h.mean(dim=(2, 3), keepdim=True)  # (N, F, 1, 1): all of x~
        features = [h + self.global_term(concat_elu(summary))]
        for s in reversed(range(len(self.up))):
            h = skips[s] + F.interpolate(features[0], scale_factor=2, mode="nearest")
            features.insert(0, self.up[s](h))
        return features


# --- The stacked design's receptive field (denoiser_conditioning="stacked") ------------------
#
# With x~ stacked above x, the network sees x~ only through its receptive field, which a shallow
# network may not stretch over all of x~ (docs/science.md). `stacked_dependencies` computes which
# input pixels every output pixel depends on, structurally: each activation map carries, per
# position, the set of input pixels it depends on, as bitsets (K words of 64 bits per position),
# and every layer ORs the sets its output reads. The geometry (filter sizes, strides, paddings,
# shifts) is read from the network's own modules; the wiring follows PixelCNNpp.trunk. A gated
# resnet's output depends on its input and on what conv_out reads of conv_input's output and of
# the skip input (nin, dropout and the gate are per position). Exact for the architecture: the
# tests compare it with the real network's gradients at every pixel (test_stacked_denoiser.py).
# Costs tens of milliseconds at 56 x 28, no weights read (a meta-device model will do).

_BITS = 64


def _bitsets(height: int, width: int) -> torch.Tensor:
    """(K, H, W) int64: position (r, c) holds the one bit r * W + c (K = ceil(H * W / 64) words)."""
    index = torch.arange(height * width)
    words = torch.zeros(-(-height * width // _BITS), height * width, dtype=torch.int64)
    words[index // _BITS, index] = torch.ones((), dtype=torch.int64) << (index % _BITS)  # bit 63: the sign bit
    return words.view(-1, height, width)


def _taps(padded: torch.Tensor, kh: int, kw: int, sh: int, sw: int) -> torch.Tensor:
    """OR over a (kh, kw) window at stride (sh, sw) of bitsets (K, H', W') padded with empty sets."""
    ho, wo = (padded.shape[1] - kh) // sh + 1, (padded.shape[2] - kw) // sw + 1
    out = torch.zeros(padded.shape[0], ho, wo, dtype=padded.dtype)
    for a in range(kh):
        for b in range(kw):
            out |= padded[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw]
    return out


def _conv_deps(module: nn.Module, deps: torch.Tensor) -> torch.Tensor:
    """layers.DownShiftedConv2d / DownRightShiftedConv2d on bitsets (K, H, W): pad, window, shift."""
    out = _taps(F.pad(deps, module.pad), *module.conv.kernel_size, *module.conv.stride)
    if getattr(module, "shift_output_down", False):
        out = down_shift(out[None])[0]
    if getattr(module, "shift_output_right", False):
        out = right_shift(out[None])[0]
    return out


def _deconv_deps(module: nn.Module, deps: torch.Tensor) -> torch.Tensor:
    """layers.Down(Right)ShiftedDeconv2d on bitsets: the transposed conv scatters input (r, c) to
    output (s r + a, s c + b) for every tap (a, b), then the module's crop (layers.py) keeps the causal part."""
    deconv = module.deconv
    (kh, kw), (sh, sw), (oh, ow) = deconv.kernel_size, deconv.stride, deconv.output_padding
    if deconv.padding != (0, 0):
        raise ValueError(f"unexpected padding in {module}")
    k, h, w = deps.shape
    full = torch.zeros(k, (h - 1) * sh + kh + oh, (w - 1) * sw + kw + ow, dtype=deps.dtype)
    for a in range(kh):
        for b in range(kw):
            full[:, a : a + sh * (h - 1) + 1 : sh, b : b + sw * (w - 1) + 1 : sw] |= deps
    fh, fw = module.filter_size
    rows = full[:, : full.shape[1] - fh + 1]
    if isinstance(module, DownShiftedDeconv2d):  # cropped (fw - 1) // 2 columns each side
        return rows[:, :, (fw - 1) // 2 : rows.shape[2] - (fw - 1) // 2]
    return rows[:, :, : rows.shape[2] - fw + 1]  # DownRightShiftedDeconv2d: cropped on the right


def _block_deps(block: nn.Module, x: torch.Tensor, a=None) -> torch.Tensor:
    """layers.GatedResnet: x | conv_out(conv_input(x) | a), a the skip input's sets (or None)."""
    h = _conv_deps(block.conv_input, x)
    if a is not None:
        h = h | a
    return x | _conv_deps(block.conv_out, h)


def _trunk_bitsets(model: nn.Module, height: int, width: int) -> torch.Tensor:
    """The input pixels each position of the trunk's output depends on: bitsets (K, H, W)."""
    x = _bitsets(height, width)  # the input pixels (the "ones" channel depends on nothing)
    u_skips = [_conv_deps(model.u_init, x)]
    ul_skips = [_conv_deps(model.ul_init_up, x) | _conv_deps(model.ul_init_left, x)]
    stages = len(model.up_stages)
    for s, stage in enumerate(model.up_stages):
        for u_block, ul_block in zip(stage.u_stream, stage.ul_stream):
            u_skips.append(_block_deps(u_block, u_skips[-1]))
            ul_skips.append(_block_deps(ul_block, ul_skips[-1], u_skips[-1]))
        if s < stages - 1:
            u_skips.append(_conv_deps(model.downsize_u[s], u_skips[-1]))
            ul_skips.append(_conv_deps(model.downsize_ul[s], ul_skips[-1]))
    u, ul = u_skips.pop(), ul_skips.pop()
    for s, stage in enumerate(model.down_stages):
        for u_block, ul_block in zip(stage.u_stream, stage.ul_stream):
            u = _block_deps(u_block, u, u_skips.pop())
            ul = _block_deps(ul_block, ul, u | ul_skips.pop())
        if s < stages - 1:
            u, ul = _deconv_deps(model.upsize_u[s], u), _deconv_deps(model.upsize_ul[s], ul)
    assert not u_skips and not ul_skips, "the walk consumes every up-pass activation once, as trunk does"
    return ul  # the head is per position


def stacked_dependencies(model: nn.Module, height: int, width: int) -> torch.Tensor:
    """(H*W, H*W) bool: [output pixel, input pixel] (raster indices) of a PixelCNNpp's trunk run on an
    H x W image, True where the output's mixture parameters depend on that input pixel (any channel)."""
    words = _trunk_bitsets(model, height, width).flatten(1).t()  # (H*W outputs, K)
    bits = (words[:, :, None] >> torch.arange(_BITS, dtype=torch.int64)) & 1  # (H*W, K, 64)
    return bits.flatten(1)[:, : height * width].bool()


def sees_all_rows_above(model: nn.Module, height: int, width: int, given_rows: int) -> torch.Tensor:
    """(H - given_rows, W) bool: which output pixels below the first `given_rows` rows depend on every
    pixel of those rows (the stacked denoiser: x~ in the top H rows of 2H)."""
    words = _trunk_bitsets(model, height, width)[:, given_rows:]  # (K, H - given_rows, W)
    given = _bitsets(given_rows, width).flatten(1)  # the same bit numbers: rows come first in raster order
    mask = given[:, 0].clone()
    for column in given.unbind(1)[1:]:
        mask |= column
    mask = mask.view(-1, 1, 1)  # (K', 1, 1): every bit of the given rows
    return ((words[: mask.shape[0]] & mask) == mask).all(dim=0)
