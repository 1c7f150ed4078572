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
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from trainables.layers import NetworkInNetwork, concat_elu


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
