"""PixelCNN++ building blocks: shifted (causal) convolutions and the gated resnet.

Causality comes from padding: a down-shifted conv with a (2, 3) filter pads one row
on top and one column each side, so output (i, j) sees input rows i-1..i; the
"shift_output_down" variants move the result one more row down so that the first
layer sees strictly earlier rows. Down-right-shifted convs pad top and left only.
Padding is recomputed from each input's shape (never cached per batch size).

Speed, the same values (tests/trainables/test_fused_elementwise.py): on the CPU, the gated
resnet's element-wise work (concat_elu, the shifted convs' padding, the sums, the gate) runs as
fused kernels (fused_elementwise.py; fused_elementwise.set_enabled(False) switches them off).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from trainables import fused_elementwise


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: (N, C, H, W) -> (N, 2C, H, W)."""
    if fused_elementwise.applies(x):
        return fused_elementwise.concat_elu_pad(x)
    return concat_elu_reference(x)


# --- the gated resnet's arithmetic, once, in plain torch operations ---------------------------
# Every fast path (fused_elementwise.py, sampling/fast_ops.py, sampling/native_blocks.cpp through
# sampling/native_chains.py) is tested against these: tests/trainables/test_gated_resnet_paths.py.

def concat_elu_reference(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """elu(cat([x, -x], dim)): (.., C, ..) -> (.., 2C, ..) along `dim` (1: NCHW, -1: channels last)."""
    return F.elu(torch.cat([x, -x], dim=dim))


def gate_reference(x: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """x + a * sigmoid(b), (a, b) = (h [+ cond]).chunk(2, dim): x (.., F, ..), h and cond (.., 2F, ..)."""
    if cond is not None:
        h = h + cond
    value, gate = h.chunk(2, dim=dim)
    return x + value * torch.sigmoid(gate)


def gated_resnet_reference(block: "GatedResnet", x: torch.Tensor, a: torch.Tensor | None = None,
                           cond: torch.Tensor | None = None) -> torch.Tensor:
    """GatedResnet's output in plain torch operations (PixelCNN++ eq. (3)): x (N, F, H, W), a (N, S*F, H, W)
    the skip streams or None, cond (N, F_cond, H, W) or None -> (N, F, H, W)."""
    h = block.conv_input(concat_elu_reference(x))  # (N, F, H, W)
    if a is not None:
        h = h + block.nin_skip(concat_elu_reference(a))
    h = block.conv_out(block.dropout(concat_elu_reference(h)))  # (N, 2F, H, W)
    c = block.nin_cond(concat_elu_reference(cond)) if cond is not None else None  # before the gate
    return gate_reference(x, h, c)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down; the first row becomes zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right; the first column becomes zeros."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class NetworkInNetwork(nn.Module):
    """A weight-normalised 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = weight_norm(nn.Conv2d(in_channels, out_channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownShiftedConv2d(nn.Module):
    """Output (i, j) sees input rows i-fh+1..i, columns j-(fw-1)/2..j+(fw-1)/2."""

    def __init__(self, in_channels, out_channels, filter_size=(2, 3), stride=(1, 1), shift_output_down=False):
        super().__init__()
        fh, fw = filter_size
        self.pad = ((fw - 1) // 2, (fw - 1) // 2, fh - 1, 0)  # (left, right, top, bottom)
        self.conv = weight_norm(nn.Conv2d(in_channels, out_channels, filter_size, stride=stride))
        self.shift_output_down = shift_output_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, self.pad))
        return down_shift(x) if self.shift_output_down else x


class DownRightShiftedConv2d(nn.Module):
    """Output (i, j) sees input rows i-fh+1..i, columns j-fw+1..j."""

    def __init__(self, in_channels, out_channels, filter_size=(2, 2), stride=(1, 1), shift_output_right=False):
        super().__init__()
        fh, fw = filter_size
        self.pad = (fw - 1, 0, fh - 1, 0)
        self.conv = weight_norm(nn.Conv2d(in_channels, out_channels, filter_size, stride=stride))
        self.shift_output_right = shift_output_right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, self.pad))
        return right_shift(x) if self.shift_output_right else x


class DownShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv, cropped so that output rows only see earlier-or-same input rows."""

    def __init__(self, in_channels, out_channels, filter_size=(2, 3), stride=(2, 2)):
        super().__init__()
        self.deconv = weight_norm(nn.ConvTranspose2d(in_channels, out_channels, filter_size, stride, output_padding=1))
        self.filter_size = filter_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)  # (N, C, 2H + fh - 1 + 1 - 1, 2W + fw - 1)
        fh, fw = self.filter_size
        h, w = x.shape[2], x.shape[3]
        return x[:, :, : h - fh + 1, (fw - 1) // 2 : w - (fw - 1) // 2]


class DownRightShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv, cropped to stay causal in rows and columns."""

    def __init__(self, in_channels, out_channels, filter_size=(2, 2), stride=(2, 2)):
        super().__init__()
        self.deconv = weight_norm(nn.ConvTranspose2d(in_channels, out_channels, filter_size, stride, output_padding=1))
        self.filter_size = filter_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        fh, fw = self.filter_size
        h, w = x.shape[2], x.shape[3]
        return x[:, :, : h - fh + 1, : w - fw + 1]


class GatedResnet(nn.Module):
    """x + gate(conv(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))) [+ nin(concat_elu(cond))]),
    PixelCNN++ eq. (3).

    `conv` is a shifted conv class; `skip_streams` is how many F-channel tensors the
    skip input `a` concatenates (0: no skip input). `cond_channels` > 0 adds a
    conditioning input `cond` (N, cond_channels, H, W), projected to the 2F pre-gate
    channels and added there (the official code's `h` conditioning, here per pixel).
    """

    def __init__(self, num_filters: int, conv, skip_streams: int = 0, dropout: float = 0.0, cond_channels: int = 0):
        super().__init__()
        self.conv_input = conv(2 * num_filters, num_filters)
        self.nin_skip = NetworkInNetwork(2 * skip_streams * num_filters, num_filters) if skip_streams else None
        self.dropout = nn.Dropout2d(dropout)  # channel-wise, as the authors' gated_resnet (Dropout2d(0.5))
        self.conv_out = conv(2 * num_filters, 2 * num_filters)
        self.nin_cond = NetworkInNetwork(2 * cond_channels, 2 * num_filters) if cond_channels else None
        # The fused path pads in its kernel and calls the convs' nn.Conv2d itself: shifted convs
        # with `pad` and no output shift (what `conv(in, out)` builds).
        self._fusable = all(hasattr(c, "pad") and not getattr(c, "shift_output_down", False)
                            and not getattr(c, "shift_output_right", False) for c in (self.conv_input, self.conv_out))

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self._fusable and fused_elementwise.applies(x):
            return self._forward_fused(x, a, cond)
        # Torch operations throughout: a block decides once (a fused kernel's channels-last output
        # among torch's default layout costs more than it saves: 0.94x at the digits size).
        return gated_resnet_reference(self, x, a, cond)

    def _forward_fused(self, x: torch.Tensor, a: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor:
        """forward with concat_elu, the shifted convs' padding, the skip's sum and the gate fused.
        Channel-wise dropout of the padded activations equals padding the dropped ones: the mask,
        (N, 2F, 1, 1), is drawn alike and scales the zero border to zero."""
        fe = fused_elementwise
        h = self.conv_input.conv(fe.concat_elu_pad(x, self.conv_input.pad))  # (N, F, H, W)
        skip = self.nin_skip(fe.concat_elu_pad(a)) if a is not None else None
        h = self.conv_out.conv(self.dropout(fe.concat_elu_pad(h, self.conv_out.pad, add=skip)))  # (N, 2F, H, W)
        c = self.nin_cond(fe.concat_elu_pad(cond)) if cond is not None else None
        return fe.gate(x, h, c)
