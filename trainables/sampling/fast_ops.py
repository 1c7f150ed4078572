"""PixelCNN++'s layers as matmuls over channels-last activation caches (for sampling/fast.py).

`ActivationMap` caches a band of rows of one activation map of the network,
(N, top + rows, left + W + right, C): the margins are the zero padding of the shifted
convs that read it (taken from the layers' `pad`), and rows start as NaN, so a read of
a value the schedule has not computed yet turns the sample into NaN instead of passing
silently.

`ShiftedConv` evaluates a DownShiftedConv2d / DownRightShiftedConv2d at one row and a
run of columns by gathering its input patches from a map and multiplying by the
effective (weight-normalised) weight, read once when the sampler is built. Output
(r, c) of a conv with filter (kh, kw), stride s and padding (left, right, top, 0), shifted
by (dr, dc) (`shift_output_down` / `shift_output_right`), reads the input rows
(r - dr) * s - top + [0, kh) and columns (c - dc) * s - left + [0, kw); it is zero when
r - dr < 0 or c - dc < 0 (the shift pads with zeros after the bias).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.layers import GatedResnet, NetworkInNetwork, concat_elu_reference


def concat_elu_last(x: Tensor) -> Tensor:
    """concat_elu on channels-last values: (..., C) -> (..., 2C), [elu(x), elu(-x)] (layers' reference)."""
    return concat_elu_reference(x, dim=-1)


class ActivationMap:
    """One cached activation map, with zero margins and a NaN interior, in one of two layouts.

    Rows are addressed by their absolute index r (0..H-1). With `rows=k` the map keeps
    only a sliding band: the last k rows written plus `top` rows above them (what a
    conv reading rows r-top..r needs), so memory does not grow with H; writing a row
    below the band slides it down. Rows above 0 are the zero padding until the band
    first slides. `fill` (C,) is what a row holds before it is written (default NaN;
    a constant channel such as the input's "ones" goes here).

    Layouts: "columns", (N, left + W + right, top + rows, C), for maps read one position at
    a time (the ul stream): a position's band of rows is contiguous, so when a conv reads
    every row of the band (a block's convs: filter height 2, band of 2) the patches of one
    output are a view (`patch_view`), not a copy. "rows", (N, top + rows, left + W + right, C),
    for maps read a whole row at a time (the u stream): seen as NCHW the band is an image in
    channels-last order, which conv2d reads in place (`ShiftedConv`).
    """

    sliding = True  # False inside a pixel step (pixel_steps.py): its rows are started before it

    def __init__(self, like, height, width, channels, margins=(0, 0, 0), rows=None, fill=None, layout="columns"):
        if layout not in ("columns", "rows"):
            raise ValueError(f"layout must be 'columns' or 'rows', got {layout!r}")
        self.top, self.left, right = margins
        self.width, self.rows, self.layout = width, height if rows is None else min(rows, height), layout
        self.row_dim, self.col_dim = (2, 1) if layout == "columns" else (1, 2)
        self.first = 0  # the absolute row held in physical row `top`
        n = like.shape[0]
        self.fill = like.new_full((channels,), float("nan")) if fill is None else fill.to(like)
        size = [n, 0, 0, channels]
        size[self.col_dim], size[self.row_dim] = self.left + width + right, self.top + self.rows
        self.data = like.new_zeros(size)
        self._views: dict = {}  # views of data by what they address: data is never reallocated
        self._poison(self.top)

    @property
    def band_rows(self) -> int:
        return self.data.shape[self.row_dim]

    def _at(self, rows: slice, cols: slice) -> tuple:
        """The index of physical rows `rows` and columns `cols` of data."""
        return (slice(None), cols, rows) if self.layout == "columns" else (slice(None), rows, cols)

    def _view(self, key: tuple, index: tuple) -> Tensor:
        """data[index], made once per key (the sampler addresses the same few places every row)."""
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self.data[index]
        return view

    def _poison(self, start: int) -> None:
        interior = slice(self.left, self.left + self.width)
        self._view(("poison", start), self._at(slice(start, None), interior)).copy_(self.fill)

    def _row(self, row: int, slide: bool = False) -> int:
        """Physical row of absolute row `row`; with slide, first move the band down to it."""
        shift = row - (self.first + self.rows - 1)
        if shift > 0 and slide:
            if not ActivationMap.sliding:
                raise RuntimeError(f"row {row} would slide the band inside a pixel step; start the row before the step")
            keep = self.band_rows - shift
            if keep > 0:
                src = self._view(("src", shift), self._at(slice(shift, None), slice(None)))
                dst = self._view(("dst", keep), self._at(slice(0, keep), slice(None)))
                dst.copy_(src.clone() if shift < keep else src)  # overlapping rows: through a copy
            self._poison(max(keep, 0))
            self.first += shift
        physical = row - self.first + self.top
        assert 0 <= physical < self.band_rows, f"row {row} is not in the band (rows {self.first}+{self.rows})"
        return physical

    def start_row(self, row: int) -> None:
        """Slide the band so that `row` is the last row held (what the first write of a row does)."""
        self._row(row, slide=True)

    def write(self, row: int, col: int, value: Tensor) -> None:
        """Store value (N, n, C') at (row, col .. col + n - 1), channels 0 .. C' - 1."""
        physical, n, k = self._row(row, slide=True), value.shape[1], value.shape[2]
        c = self.left + col
        self._view(("w", physical, c, n, k), self._at(physical, slice(c, c + n)) + (slice(0, k),)).copy_(value)

    def read(self, row: int, col: int, n: int) -> Tensor:
        """The values at (row, col .. col + n - 1): (N, n, C), a view."""
        physical, c = self._row(row), self.left + col
        return self._view(("r", physical, c, n), self._at(physical, slice(c, c + n)))

    def _columns_only(self, what: str) -> None:
        if self.layout != "columns":
            raise ValueError(f"{what} needs a map in the 'columns' layout")

    def slot(self, col: int) -> Tensor:
        """The last row held, at column col: (N, C), a view that stays valid as the band slides
        (a map of `rows=1` holds the row being computed there)."""
        self._columns_only("slot")
        return self.data[:, self.left + col, self.band_rows - 1]

    def patch_view(self, col: int, kw: int) -> Tensor:
        """Every band row of columns col + [0, kw) (col absolute, negative inside the left
        margin): (N, kw * band_rows * C) in (kw, kh, C) order, a view."""
        self._columns_only("patch_view")
        c = self.left + col
        assert c >= 0 and c + kw <= self.data.shape[1], "a read left the zero margin"
        return self.data[:, c : c + kw].reshape(self.data.shape[0], -1)

    def window(self, row: int, kh: int, col: int, width: int) -> Tensor:
        """Rows row + [0, kh) of columns col + [0, width) (absolute; negative inside the margins),
        a view: (N, width, kh, C) in the "columns" layout, (N, kh, width, C) in "rows"."""
        r, c = row - self.first + self.top, self.left + col
        assert r >= 0 and c >= 0, "a read left the band or the zero margin"
        assert r + kh <= self.band_rows, "a read below the last row written"
        assert c + width <= self.data.shape[self.col_dim], "a read left the right margin"
        return self.data[self._at(slice(r, r + kh), slice(c, c + width))]

    def patches(self, row: int, kh: int, col: int, n: int, kw: int, stride: int) -> Tensor:
        """Input patches of n outputs: rows row + [0, kh), columns col + stride*t + [0, kw).

        row and col are absolute (negative inside the margins); the rows must be held.
        Returns (N * n, kw * kh * C) in (kw, kh, C) order in the "columns" layout, (kh, kw, C)
        in "rows" (a view where it can be). Several outputs of a "rows" map are conv2d's job.
        """
        band = self.window(row, kh, col, (n - 1) * stride + kw)
        if n == 1:
            return band.reshape(band.shape[0], -1)
        self._columns_only("patches of several outputs")
        windows = band.unfold(1, kw, stride)  # (N, n, kh, C, kw)
        return windows.permute(0, 1, 4, 2, 3).reshape(band.shape[0] * n, -1)


class ShiftedConv:
    """A shifted conv (layers.DownShiftedConv2d or DownRightShiftedConv2d) as a matmul."""

    def __init__(self, module: torch.nn.Module):
        conv = module.conv
        weight = conv.weight.detach()  # effective weight g * v / |v|: (Cout, Cin, kh, kw)
        self.out_channels, _, self.kh, self.kw = weight.shape
        if conv.stride[0] != conv.stride[1] or conv.padding != (0, 0):
            raise ValueError("expected square strides and explicit padding (layers.py convs)")
        self.stride = conv.stride[0]
        self.pad_left, self.pad_right, self.pad_top, pad_bottom = module.pad
        if pad_bottom != 0:
            raise ValueError("a conv padded at the bottom would read later rows")
        self.shift_row = int(getattr(module, "shift_output_down", False))
        self.shift_col = int(getattr(module, "shift_output_right", False))
        # (kw*kh*Cin, Cout) and (kh*kw*Cin, Cout): the order of the patches of each map layout
        self.matrices = {"columns": weight.permute(3, 2, 1, 0).reshape(-1, self.out_channels),
                         "rows": weight.permute(2, 3, 1, 0).reshape(-1, self.out_channels)}
        self.matrix = self.matrices["columns"]
        self.weight = weight.contiguous(memory_format=torch.channels_last)  # for conv2d on "rows" maps
        self.bias = conv.bias.detach()
        self.native = None  # runs of outputs on "rows" maps: native_chains.NativeRowConv where compiled

    @property
    def margins(self) -> tuple[int, int, int]:
        """(top, left, right) zero margins its input map needs."""
        return self.pad_top, self.pad_left, self.pad_right

    def reads_right(self) -> bool:
        """Whether output (r, c) reads input columns right of c * stride (u-stream convs)."""
        return self.kw - 1 - self.pad_left > 0

    def __call__(self, inp: ActivationMap, row: int, col: int, n: int, base: Optional[Tensor] = None) -> Tensor:
        """Outputs at (row, col .. col + n - 1): (N, n, Cout). base (N, n, Cout), if given,
        replaces the bias (a precomputed bias + skip term, added for free by addmm)."""
        batch = inp.data.shape[0]
        r, c = row - self.shift_row, col - self.shift_col  # pre-shift position
        lead = min(n, max(0, -c))  # outputs that are the shift's zero column
        if r < 0 or lead:
            if base is not None:
                raise ValueError("a base term is only for unshifted convs")
            if r < 0 or lead == n:
                return inp.data.new_zeros(batch, n, self.out_channels)
        s, top, left, m = self.stride, r * self.stride - self.pad_top, (c + lead) * self.stride - self.pad_left, n - lead
        if m > 1 and inp.layout == "rows":  # a run of outputs: conv2d reads the band in place, channels last
            window = inp.window(top, self.kh, left, (m - 1) * s + self.kw)  # (N, kh, w', C)
            if self.native is not None:
                out = self.native(window, m, base)
            else:
                out = F.conv2d(window.permute(0, 3, 1, 2), self.weight, self.bias if base is None else None, stride=s)
                out = out.permute(0, 2, 3, 1).reshape(batch, m, self.out_channels)  # from (N, Cout, 1, m)
                if base is not None:
                    out = out + base
        else:
            start = self.bias if base is None else _flat(base)
            patches = inp.patches(top, self.kh, left, m, self.kw, s)
            out = torch.addmm(start, patches, self.matrices[inp.layout]).view(batch, m, self.out_channels)
        return F.pad(out, (0, 0, lead, 0)) if lead else out


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def nin_matrices(nin: NetworkInNetwork, streams: int) -> tuple[list[Tensor], Tensor]:
    """Split a skip NIN over concat_elu(cat(a_1..a_S)) into per-stream (2F, Cout) matrices.

    concat_elu(cat(a_1..a_S)) orders channels [a_1..a_S, -a_1..-a_S], so stream t's
    rows are t*F + [0, F) and S*F + t*F + [0, F), matching concat_elu(a_t) = [a_t, -a_t].
    Returns ([M_1..M_S], bias).
    """
    weight = nin.conv.weight.detach()[:, :, 0, 0].t()  # (2 S F, Cout)
    f = weight.shape[0] // (2 * streams)
    mats = [torch.cat([weight[t * f : (t + 1) * f], weight[(streams + t) * f : (streams + t + 1) * f]]) for t in range(streams)]
    return mats, nin.conv.bias.detach()


class FastGatedResnet:
    """layers.GatedResnet at a row and a run of columns, with its two input caches.

    x_map caches concat_elu(block input) for conv_input; h_map caches concat_elu(h) for
    conv_out (dropout is off in eval mode). The skip NIN is split by input stream
    (`skip_part`), so that a stream known a whole row ahead (u) is applied per row.
    A denoiser's block adds nin_cond(concat_elu(cond)) before its gate; cond is known
    for the whole image, so its term is computed a row at a time (`set_cond_row`).
    """

    def __init__(self, block: GatedResnet, like: Tensor, height: int, width: int, rows=None, layout="columns"):
        self.conv_input, self.conv_out = ShiftedConv(block.conv_input), ShiftedConv(block.conv_out)
        two_f = 2 * self.conv_input.out_channels
        self.x_map = ActivationMap(like, height, width, two_f, self.conv_input.margins, rows, layout=layout)
        self.h_map = ActivationMap(like, height, width, two_f, self.conv_out.margins, rows, layout=layout)
        if block.nin_skip is not None:
            streams = block.nin_skip.conv.in_channels // two_f
            self.skip_mats, nin_bias = nin_matrices(block.nin_skip, streams)
            self.skip_bias = nin_bias + self.conv_input.bias  # both biases of h, once
        self.cond_matrix = self.cond_bias = self.cond_row = None
        self.cond_row_index = -1
        if block.nin_cond is not None:
            self.cond_matrix = block.nin_cond.conv.weight.detach()[:, :, 0, 0].t()  # (2 F_cond, 2F)
            self.cond_bias = block.nin_cond.conv.bias.detach() + self.conv_out.bias  # both biases before the gate
            self.cond_row = like.new_empty(like.shape[0], width, two_f)  # one buffer, rewritten per row
            self.cond_cols = self.cond_row.unbind(1)  # per column (N, 2F), for pixel()
        self.filters = self.conv_input.out_channels
        self.row_started = -1
        self.concat_elu = concat_elu_last  # of the u rows; native_chains.NativeConcatElu where compiled
        self.native_row = None  # whole rows as one compiled call: native_chains.NativeRowBlock
        self.native_skip = None  # skip_part by the compiled matmul: native_chains.NativeSkip

    def set_cond_row(self, row: int, cond: Tensor) -> None:
        """cond (N, W, F_cond): the conditioning features of row `row`; until the next
        call, conv_out's bias at this row is replaced by bias + nin_cond(concat_elu(cond))."""
        torch.addmm(self.cond_bias, _flat(concat_elu_last(cond)), self.cond_matrix, out=_flat(self.cond_row))
        self.cond_row_index = row

    def prepare_pixels(self) -> None:
        """Set up `pixel`: per column, views of the current row's slots of both caches (where
        concat_elu of the block input and of h go) and of the patches their convs read. The
        convs must read the whole band (filter height = band = 2 rows), unshifted, stride 1."""
        views = {}
        for name, conv, cache in (("x", self.conv_input, self.x_map), ("h", self.conv_out, self.h_map)):
            if (conv.stride, conv.shift_row, conv.shift_col, cache.rows) != (1, 0, 0, 1) or conv.kh != cache.band_rows:
                raise ValueError("pixel-by-pixel blocks need unshifted stride-1 convs that read a whole band of rows")
            slots = [cache.slot(c) for c in range(cache.width)]
            views[name] = [(slot, slot[:, : self.filters], slot[:, self.filters :]) for slot in slots]
            views[name + "_patches"] = [cache.patch_view(c - conv.pad_left, conv.kw) for c in range(cache.width)]
        self.x_slots, self.x_patches = views["x"], views["x_patches"]
        self.h_slots, self.h_patches = views["h"], views["h_patches"]
        gated = self.x_map.data.new_empty(self.x_map.data.shape[0], 2 * self.filters)  # conv_out's output, reused
        self.gated, self.value, self.gate = gated, gated[:, : self.filters], gated[:, self.filters :]
        # The per-row terms of conv_input's base (biases and the skip NIN's u-stream share), one buffer
        self.row_term = gated.new_empty(gated.shape[0], self.x_map.width, self.filters)
        self.term_cols = self.row_term.unbind(1)

    def start_row(self, row: int) -> None:
        """Slide both caches to row `row` before its first pixel (a pixel step must not slide)."""
        self.x_map.start_row(row)
        self.h_map.start_row(row)
        self.row_started = row

    def input_slot(self, col: int) -> Tensor:
        """concat_elu of the block input at (the current row, col), once pixel() has run there: (N, 2F), a view."""
        return self.x_slots[col][0]

    def pixel(self, x: Tensor, row: int, col: int, skip: Optional[Tensor] = None) -> Tensor:
        """__call__ at one position without copies: x (N, F) -> the block output (N, F); skip
        (N, F) as in __call__. The same arithmetic in about a third of the operations: h goes
        straight into its cache slot, whose concat_elu is then completed in place."""
        if row != self.row_started:
            self.start_row(row)
        x_slot, x_pos, x_neg = self.x_slots[col]
        x_pos.copy_(x)
        torch.neg(x, out=x_neg)
        F.elu_(x_slot)
        h_slot, h_pos, h_neg = self.h_slots[col]
        torch.addmm(self.conv_input.bias if skip is None else skip, self.x_patches[col], self.conv_input.matrix,
                    out=h_pos)
        torch.neg(h_pos, out=h_neg)
        F.elu_(h_slot)
        if self.cond_matrix is not None:
            assert row == self.cond_row_index, f"conditioning of row {self.cond_row_index} read at row {row}"
            base = self.cond_cols[col]
        else:
            base = self.conv_out.bias
        torch.addmm(base, self.h_patches[col], self.conv_out.matrix, out=self.gated)
        return torch.addcmul(x, self.value, self.gate.sigmoid_())

    def reads_right(self) -> bool:
        return self.conv_input.reads_right() or self.conv_out.reads_right()

    def skip_part(self, stream: int, elu_a: Tensor, base: Optional[Tensor] = None,
                  out: Optional[Tensor] = None) -> Tensor:
        """Stream `stream`'s share of nin_skip(concat_elu(a)), given elu_a = concat_elu(a)
        (N, n, 2F), plus base (N, n, F) (default: the biases of h), into `out` (N, n, F) if given.
        Summed over streams it is the `skip` argument of __call__."""
        if self.native_skip is not None:
            return self.native_skip(stream, elu_a, base, out)
        start = self.skip_bias if base is None else _flat(base)
        if out is not None:
            torch.addmm(start, _flat(elu_a), self.skip_mats[stream], out=_flat(out))
            return out
        return torch.addmm(start, _flat(elu_a), self.skip_mats[stream]).view(elu_a.shape[0], elu_a.shape[1], -1)

    def __call__(self, x: Tensor, row: int, col: int, skip: Optional[Tensor] = None,
                 elu_x: Optional[Tensor] = None) -> Tensor:
        """x (N, n, F): the block input at (row, col ..); returns the block output there.

        skip (N, n, F): the biases of h plus the skip NIN term (see skip_part), if any.
        elu_x: concat_elu(x), where the caller has it already."""
        n = x.shape[1]
        if self.cond_matrix is not None:
            assert row == self.cond_row_index, f"conditioning of row {self.cond_row_index} read at row {row}"
        if self.native_row is not None and col == 0 and n == self.x_map.width:
            return self.native_row(x, row, self.concat_elu(x) if elu_x is None else elu_x, skip)
        self.x_map.write(row, col, self.concat_elu(x) if elu_x is None else elu_x)
        h = self.conv_input(self.x_map, row, col, n, base=skip)  # (N, n, F)
        self.h_map.write(row, col, self.concat_elu(h))
        base = None
        if self.cond_matrix is not None:
            base = self.cond_row[:, col : col + n]  # (N, n, 2F)
        value, gate = self.conv_out(self.h_map, row, col, n, base=base).chunk(2, dim=-1)
        return torch.addcmul(x, value, torch.sigmoid(gate))
