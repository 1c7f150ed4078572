"""PixelCNN++ (Salimans et al. 2017): returns logistic-mixture parameters, nothing else.

Three resolutions (H, H/2, H/4) joined by two stride-2 down- and upsamplings; an up
pass of `nr_resnet` gated resnets per stage and a down pass of nr_resnet, nr_resnet+1,
nr_resnet+1 that consumes the up pass's activations as skip connections. Two streams:
u sees the rows above (down-shifted convs), ul the rows above and the pixels to the
left (down-right-shifted convs). A constant "ones" channel is appended to the input so
the zero padding of the shifted convs is distinguishable from black pixels.

The denoiser p(x | x~) is the same class with `conditional=True`, in one of two designs
(`conditioning`, config.ModelConfig.denoiser_conditioning, which checkpoints record):

- "encoder": the causal network runs on x alone, (N, C, H, W), and x~ enters through a
  non-causal encoder (conditioning.NoisyImageEncoder) whose features at each level are
  added before the gate of every gated resnet of that level, u and ul streams alike. The
  causal structure over x is the unconditional one, and every output sees all of x~, at
  any size and depth (tests/trainables/test_denoiser_dependencies.py).
- "stacked", the authors' code: x~ is stacked above x, (N, C, 2H, W), the unconditional
  network runs on that image and the bottom half's outputs are the denoiser's. It has
  exactly the unconditional model's parameters. Every pixel of x~ precedes x in raster
  order, but the network sees x~ only through its receptive field, which at depth 1 misses
  part of x~ at 28x28 and 32x32; `stacked_coverage` counts the clean pixels that see all of
  it (config validation refuses an incomplete one unless allowed; docs/science.md).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.conditioning import NoisyImageEncoder, sees_all_rows_above
from trainables.layers import (
    DownRightShiftedConv2d,
    DownRightShiftedDeconv2d,
    DownShiftedConv2d,
    DownShiftedDeconv2d,
    GatedResnet,
    NetworkInNetwork,
)
from trainables.likelihoods import mixture_param_count

NUM_STAGES = 3
CONDITIONINGS = ("encoder", "stacked")  # config.DENOISER_CONDITIONINGS: how x~ enters the denoiser


class _UpStage(nn.Module):
    def __init__(self, nr_resnet: int, nr_filters: int, dropout: float, cond: int = 0):
        super().__init__()
        self.u_stream = nn.ModuleList(
            GatedResnet(nr_filters, DownShiftedConv2d, 0, dropout, cond) for _ in range(nr_resnet)
        )
        self.ul_stream = nn.ModuleList(
            GatedResnet(nr_filters, DownRightShiftedConv2d, 1, dropout, cond) for _ in range(nr_resnet)
        )

    def forward(self, u, ul, cond=None):
        us, uls = [], []
        for u_block, ul_block in zip(self.u_stream, self.ul_stream):
            u = u_block(u, cond=cond)
            ul = ul_block(ul, a=u, cond=cond)
            us.append(u)
            uls.append(ul)
        return us, uls


class _DownStage(nn.Module):
    def __init__(self, nr_resnet: int, nr_filters: int, dropout: float, cond: int = 0):
        super().__init__()
        self.u_stream = nn.ModuleList(
            GatedResnet(nr_filters, DownShiftedConv2d, 1, dropout, cond) for _ in range(nr_resnet)
        )
        self.ul_stream = nn.ModuleList(
            GatedResnet(nr_filters, DownRightShiftedConv2d, 2, dropout, cond) for _ in range(nr_resnet)
        )

    def forward(self, u, ul, u_skips: list, ul_skips: list, cond=None):
        for u_block, ul_block in zip(self.u_stream, self.ul_stream):
            u = u_block(u, a=u_skips.pop(), cond=cond)
            ul = ul_block(ul, a=torch.cat([u, ul_skips.pop()], dim=1), cond=cond)
        return u, ul


class PixelCNNpp(nn.Module):
    """forward(x[, x_noisy]) -> mixture parameters (N, P, H, W), P = mixture_param_count(C, K).

    x: (N, C, H, W) with H, W divisible by 4; C in {1, 3}. With `conditional=True`,
    `x_noisy` of the same shape is required and the output at pixel (i, j) depends on x at
    pixels before (i, j) in raster order and on x_noisy: all of it with `conditioning`
    "encoder", what the receptive field reaches with "stacked" (module docstring). The
    encoder model adds `encoder` and the gated resnets' `nin_cond`; the unconditional and
    the stacked model have exactly the parameters (and, from the same seed, the initial
    values) the unconditional model always had.
    """

    def __init__(
        self,
        in_channels: int = 1,
        nr_filters: int = 32,
        nr_resnet: int = 2,
        num_mixtures: int = 5,
        dropout: float = 0.0,
        conditional: bool = False,
        conditioning: str = "encoder",
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.in_channels, self.num_mixtures, self.conditional = in_channels, num_mixtures, conditional
        self.stacked = conditional and conditioning == "stacked"  # x~ above x: no conditioning path
        encoded = conditional and not self.stacked
        f, c_in = nr_filters, in_channels + 1  # +1: the "ones" channel marking padding
        cond = f if encoded else 0  # channels of the encoder's features
        self.up_stages = nn.ModuleList(_UpStage(nr_resnet, f, dropout, cond) for _ in range(NUM_STAGES))
        down_counts = [nr_resnet] + [nr_resnet + 1] * (NUM_STAGES - 1)
        self.down_stages = nn.ModuleList(_DownStage(n, f, dropout, cond) for n in down_counts)
        self.downsize_u = nn.ModuleList(DownShiftedConv2d(f, f, stride=(2, 2)) for _ in range(NUM_STAGES - 1))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv2d(f, f, stride=(2, 2)) for _ in range(NUM_STAGES - 1))
        self.upsize_u = nn.ModuleList(DownShiftedDeconv2d(f, f) for _ in range(NUM_STAGES - 1))
        self.upsize_ul = nn.ModuleList(DownRightShiftedDeconv2d(f, f) for _ in range(NUM_STAGES - 1))
        self.u_init = DownShiftedConv2d(c_in, f, filter_size=(2, 3), shift_output_down=True)
        self.ul_init_up = DownShiftedConv2d(c_in, f, filter_size=(1, 3), shift_output_down=True)
        self.ul_init_left = DownRightShiftedConv2d(c_in, f, filter_size=(2, 1), shift_output_right=True)
        self.head = NetworkInNetwork(f, mixture_param_count(in_channels, num_mixtures))
        self.encoder = NoisyImageEncoder(in_channels, f, nr_resnet, NUM_STAGES) if encoded else None

    def forward(self, x: torch.Tensor, x_noisy: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.conditional:
            if x_noisy is None or x_noisy.shape != x.shape:
                raise ValueError("the denoiser needs x_noisy with the same shape as x")
        elif x_noisy is not None:
            raise ValueError("x_noisy given to an unconditional model")
        self._check_shape(x)
        if self.stacked:
            features = self.trunk(torch.cat([x_noisy, x], dim=2))  # (N, F, 2H, W) of x~ above x
            return self.head(F.elu(features[:, :, x.shape[2] :]))  # the bottom half: (N, P, H, W)
        cond = self.encoder(x_noisy) if self.conditional else None  # per level (N, F, H/2^s, W/2^s)
        return self.head(F.elu(self.trunk(x, cond)))  # (N, P, H, W)

    def trunk(self, x: torch.Tensor, cond: Optional[list] = None) -> torch.Tensor:
        """The two-stream network up to the head: (N, C, H, W) -> ul features (N, F, H, W).

        cond: the encoder's features by level (finest first), or None (unconditional)."""
        cond = cond if cond is not None else [None] * NUM_STAGES
        ones = torch.ones_like(x[:, :1])
        x = torch.cat([x, ones], dim=1)  # (N, C + 1, H, W)
        u_skips = [self.u_init(x)]
        ul_skips = [self.ul_init_up(x) + self.ul_init_left(x)]
        for stage in range(NUM_STAGES):
            us, uls = self.up_stages[stage](u_skips[-1], ul_skips[-1], cond[stage])
            u_skips += us
            ul_skips += uls
            if stage < NUM_STAGES - 1:
                u_skips.append(self.downsize_u[stage](u_skips[-1]))
                ul_skips.append(self.downsize_ul[stage](ul_skips[-1]))
        u, ul = u_skips.pop(), ul_skips.pop()
        for stage in range(NUM_STAGES):
            u, ul = self.down_stages[stage](u, ul, u_skips, ul_skips, cond[NUM_STAGES - 1 - stage])
            if stage < NUM_STAGES - 1:
                u, ul = self.upsize_u[stage](u), self.upsize_ul[stage](ul)
        assert not u_skips and not ul_skips, "every up-pass activation is consumed once"
        return ul

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}")
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"height and width must be divisible by 4, got {tuple(x.shape[2:])}")


@lru_cache(maxsize=None)
def stacked_coverage(nr_resnet: int, height: int, width: int) -> int:
    """How many of the H*W clean pixels of a stacked denoiser (x~ above x, 2H x W) have mixture
    parameters that depend on every pixel of x~, at depth `nr_resnet` (conditioning.sees_all_rows_above,
    exact for the architecture; filters, mixtures and channels do not change it). Tens of ms, cached."""
    with torch.device("meta"):  # the modules' geometry, no weights
        model = PixelCNNpp(1, 1, nr_resnet, 1)
    return int(sees_all_rows_above(model, 2 * height, width, height).sum())


def full_coverage_depth(height: int, width: int, deepest: int = 8) -> Optional[int]:
    """The smallest nr_resnet at which every clean pixel of a stacked denoiser sees all of x~ (None: none
    up to `deepest`)."""
    return next((d for d in range(1, deepest + 1) if stacked_coverage(d, height, width) == height * width), None)
