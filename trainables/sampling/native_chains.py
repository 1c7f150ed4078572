"""The fast sampler's compiled steps (native_blocks.cpp) wrapped for sampling/fast.py.

`NativeChains`: the ul stream's gated resnets at a pixel. At level s and column q the up pass runs the
level's up blocks in a row and the down pass its down blocks; each chain is one call that takes the
chain's input and leaves every block's output in a buffer of its own. Everything else a block reads
sits at a place that does not move from row to row (the caches' current-row slots and patch views, the
per-row terms, the conditioning row: the same property that lets a CUDA graph replay a step,
pixel_steps.py), so each block's pointers and strides are written once per column into a
`native_blocks.Block` and the chain call passes only its input. The down blocks' skip input is
concat_elu of the up blocks' inputs, which the up blocks' caches hold already (as in
`_CachedTrunk.ul_pixel`), except for the first down block below the top level, whose skip input is the
last up block's output (concat_elu'ed inside the call).

The u rows: `NativeRowBlock` (a u block's whole row), `NativeRowConv` (the other shifted convs over a
row), `NativeSkip` (the skip NINs' row shares) and `NativeConcatElu`.

Every call checks what it is given (shapes against the sizes the compiled code will use, float32, the CPU,
strides: native_checks.expect) before passing addresses to compiled code.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from trainables.sampling.fast_ops import FastGatedResnet
from trainables.sampling.native_blocks import Block, RowBlock
from trainables.sampling.native_checks import expect, expect_int


def _packed(matrix: Tensor, width: int) -> Tensor:
    """A weight matrix (K, P) as the compiled matmul reads it: its columns padded with zeros to whole vectors."""
    out = matrix.new_zeros(matrix.shape[0], -(-matrix.shape[1] // width) * width)
    out[:, : matrix.shape[1]] = matrix
    return out


def _rows(t: Tensor, what: str, shape: tuple) -> tuple[int, int]:
    """(address, row stride) of a 2-D float32 CPU view of `shape` whose rows are contiguous."""
    expect(t, what, shape)
    return t.data_ptr(), t.stride(0)


class NativeChains:
    """Per level and column, the up and down chains of the ul stream as arrays of Block."""

    def __init__(self, lib: ctypes.CDLL, up_ul: list[list[FastGatedResnet]], down_ul: list[list[FastGatedResnet]],
                 widths: list[int]):
        self.lib, self.width = lib, lib.smoothing_vector_width()
        self._keep: list = []  # every tensor and array a Block points into
        self.outs: dict = {}  # id(block) -> its output buffer (N, F)
        self.packs: dict = {}  # id(block) -> its packed weights
        levels = len(up_ul)
        blk0 = up_ul[0][0]
        n, f = blk0.gated.shape[0], blk0.filters
        self.n, self.f = n, f  # every block's: the scratch below is sized for them
        self.nv_f, self.nv_g = -(-f // self.width), -(-2 * f // self.width)
        self.scratch = blk0.gated.new_zeros(n, (self.nv_f + self.nv_g) * self.width + 2 * f)
        self.head_in = None
        self.up = [[self._chain(up_ul[s], widths[s], q, None, s == levels - 1) for q in range(widths[s])]
                   for s in range(levels)]
        self.down = [[self._chain(down_ul[s], widths[s], q, up_ul[s], s == levels - 1) for q in range(widths[s])]
                     for s in range(levels)]

    def _out(self, blk: FastGatedResnet) -> Tensor:
        if id(blk) not in self.outs:
            self.outs[id(blk)] = blk.gated.new_zeros(blk.gated.shape[0], blk.filters)
            self.packs[id(blk)] = {"w_in": _packed(blk.conv_input.matrix, self.width),
                                   "w_out": _packed(blk.conv_out.matrix, self.width),
                                   "w_skip": _packed(blk.skip_mats[-1], self.width) if len(blk.skip_mats) > 1 else None}
        return self.outs[id(blk)]

    def _chain(self, blocks: list[FastGatedResnet], width: int, q: int, up_blocks, top: bool):
        """(the Block array's address, its length, the last block's output) of one chain at column q."""
        chain = (Block * len(blocks))()
        n, f, vw = self.n, self.f, self.width
        for b, blk in enumerate(blocks):
            d, out = chain[b], self._out(blk)
            pack = self.packs[id(blk)]
            where = f"block {b} at column {q}"
            d.n, d.f = expect(out, f"{where}: output (the chain's N, F)", (n, f), "contiguous").shape
            w_in = expect(pack["w_in"], f"{where}: packed conv_input weight", (None, self.nv_f * vw), "contiguous")
            w_out = expect(pack["w_out"], f"{where}: packed conv_out weight", (None, self.nv_g * vw), "contiguous")
            d.x_slot, d.ld_x_slot = _rows(blk.x_slots[q][0], f"{where}: x slot", (n, 2 * f))
            d.a_in, d.ld_a_in = _rows(blk.x_patches[q], f"{where}: conv_input patches", (n, w_in.shape[0]))
            d.k_in, d.w_in = w_in.shape[0], w_in.data_ptr()
            d.term, d.ld_term = _rows(blk.term_cols[q], f"{where}: row term", (n, f))
            d.h_slot, d.ld_h_slot = _rows(blk.h_slots[q][0], f"{where}: h slot", (n, 2 * f))
            d.a_out, d.ld_a_out = _rows(blk.h_patches[q], f"{where}: conv_out patches", (n, w_out.shape[0]))
            d.k_out, d.w_out = w_out.shape[0], w_out.data_ptr()
            if blk.cond_matrix is not None:
                d.base_out, d.ld_base_out = _rows(blk.cond_cols[q], f"{where}: conditioning row", (n, 2 * f))
            else:
                bias = expect(blk.conv_out.bias, f"{where}: conv_out bias", (2 * f,), "contiguous")
                d.base_out, d.ld_base_out = bias.data_ptr(), 0
                self._keep.append(bias)
            d.out, d.scratch = out.data_ptr(), self.scratch.data_ptr()
            if up_blocks is not None:  # a down block: its skip NIN reads concat_elu(u) (in term) and ul's skip
                k = len(up_blocks) - b - (1 if top else 0)  # which up block's input, as ul_pixel pops them
                if k == len(up_blocks):
                    raw = expect(self._out(up_blocks[-1]), f"{where}: skip input (the last up output)", (n, f))
                    d.skip_a, d.ld_skip_a, d.skip_raw = raw.data_ptr(), f, 1
                else:
                    d.skip_a, d.ld_skip_a = _rows(up_blocks[k].input_slot(q), f"{where}: skip input", (n, 2 * f))
                w_skip = pack["w_skip"]
                expect(w_skip, f"{where}: packed skip weight", (2 * f, self.nv_f * vw), "contiguous")
                d.k_skip, d.w_skip = 2 * f, w_skip.data_ptr()
        self._keep.append(chain)
        return ctypes.addressof(chain), len(blocks), self._out(blocks[-1])

    def elu(self, x: Tensor) -> Tensor:
        """elu of a contiguous (N, F) float32 tensor (the head's input), into a buffer rewritten by the next call."""
        expect(x, "head input", (self.n, self.f), "contiguous")
        if self.head_in is None or self.head_in.shape != x.shape:
            self.head_in = torch.empty_like(x)
        self.lib.smoothing_map(2, x.data_ptr(), self.head_in.data_ptr(), x.numel())
        return self.head_in

    def run(self, chain: tuple, x: Tensor) -> Tensor:
        """Run a chain from its input x (N, F): the last block's output, a buffer rewritten by the next call."""
        address, count, out = chain
        expect(x, "chain input", (self.n, self.f))
        self.lib.smoothing_block_chain(address, count, x.data_ptr(), x.stride(0))
        return out


class NativeConcatElu:
    """concat_elu on channels-last values (..., n, C) -> (..., n, 2C), native_blocks.cpp's vector math in
    place of torch's elu (fast_ops.concat_elu_last): the u rows' element-wise share."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib

    def __call__(self, x: Tensor) -> Tensor:
        expect(x, "concat_elu input (N, n, C)", (None, None, None))
        out = x.new_empty(*x.shape[:2], 2 * x.shape[2])
        self.lib.smoothing_concat_elu(x.shape[0], x.shape[1], x.shape[2], x.data_ptr(), x.stride(0), x.stride(1),
                                      out.data_ptr(), out.stride(0), out.stride(1))
        return out


class NativeRowConv:
    """A shifted conv (fast_ops.ShiftedConv) at a run of outputs of one row of a "rows" map: native_blocks.cpp's
    tiled matmul reading the patches in place (each a kh-row window of the band), in place of conv2d."""

    def __init__(self, lib: ctypes.CDLL, conv):
        self.lib, self.conv = lib, conv
        width = lib.smoothing_vector_width()
        self.nv = -(-conv.out_channels // width)
        matrix = conv.matrices["rows"]  # (kh * kw * Cin, Cout) in (kh, kw, Cin) order: one row of the window each
        if matrix.dtype != torch.float32:
            raise ValueError(f"native convs run float32, not {matrix.dtype}")
        self.packed = _packed(matrix, width)
        self.in_channels = matrix.shape[0] // (conv.kh * conv.kw)
        self.scratch = matrix.new_empty(0)
        self.width = width

    def __call__(self, window: Tensor, m: int, base=None) -> Tensor:
        """window (N, kh, w', C), a view of the band; base (N, m, Cout) or None (the bias): (N, m, Cout)."""
        conv = self.conv
        m = expect_int(m, "m (outputs)", 1)
        # output j reads columns j * stride + [0, kw) of every window row: w' >= (m - 1) * stride + kw
        n, _, w, c = expect(window, "window", (None, conv.kh, None, self.in_channels)).shape
        if w < (m - 1) * conv.stride + conv.kw:
            raise ValueError(f"window: expected at least {(m - 1) * conv.stride + conv.kw} columns for {m} outputs, "
                             f"got shape {tuple(window.shape)}")
        if c > 1 and window.stride(2) != c:
            raise ValueError(f"window: expected columns of contiguous channels (stride[2] = {c}), "
                             f"got shape {tuple(window.shape)} with strides {window.stride()}")
        if self.scratch.numel() < m * self.nv * self.width:
            self.scratch = self.packed.new_empty(m * self.nv * self.width)
        out = self.packed.new_empty(n, m, conv.out_channels)
        if base is None:
            base, base_batch, base_ld = expect(conv.bias, "bias", (conv.out_channels,), "contiguous"), 0, 0
        else:
            expect(base, "base", (n, m, conv.out_channels))
            base_batch, base_ld = base.stride(0), base.stride(1)
        self.lib.smoothing_conv_rows(n, m, window.data_ptr(), window.stride(0), conv.stride * c, conv.kh, conv.kw * c,
                                     window.stride(1), self.packed.data_ptr(), self.nv, conv.out_channels,
                                     base.data_ptr(), base_batch, base_ld, out.data_ptr(), self.scratch.data_ptr())
        return out


class NativeRowBlock:
    """A u-stream gated resnet over a whole row (fast_ops.FastGatedResnet.__call__ at column 0) as one compiled
    call: concat_elu(x) into its cache row, conv_input read in place plus the skip term or bias, concat_elu(h)
    into its cache row, conv_out plus the bias or the conditioning row, the gate."""

    def __init__(self, lib: ctypes.CDLL, blk: FastGatedResnet):
        self.lib, self.blk = lib, blk
        width = lib.smoothing_vector_width()
        f, n = blk.filters, blk.x_map.data.shape[0]
        nv_f, nv_g = -(-f // width), -(-2 * f // width)
        d = self.desc = RowBlock()
        d.n, d.m, d.f = n, blk.x_map.width, f
        self._keep = []
        for name, conv, cache in (("x", blk.conv_input, blk.x_map), ("h", blk.conv_out, blk.h_map)):
            if (conv.stride, conv.shift_row, conv.shift_col, cache.rows, cache.layout) != (1, 0, 0, 1, "rows") \
                    or conv.kh != cache.band_rows or cache.left != conv.pad_left or cache.data.dtype != torch.float32:
                raise ValueError("row blocks need unshifted stride-1 float32 convs reading a whole band of rows")
            data = cache.data  # (N, top + 1, left + W + right, 2F): never reallocated, the band slides in place
            self._keep.append(_packed(conv.matrices["rows"], width))
            setattr(d, f"{name}_row", data[:, cache.top, cache.left].data_ptr())
            setattr(d, f"{name}_row_batch", data.stride(0))
            setattr(d, f"{name}_win", data.data_ptr())  # row 0 (the row above), column 0 (the left margin)
            setattr(d, f"{name}_win_batch", data.stride(0))
            setattr(d, f"{name}_win_row", data.stride(1))
        d.kh_in, d.kw_in, d.kh_out, d.kw_out = blk.conv_input.kh, blk.conv_input.kw, blk.conv_out.kh, blk.conv_out.kw
        d.w_in, d.w_out = self._keep[0].data_ptr(), self._keep[1].data_ptr()
        d.bias_in = blk.conv_input.bias.data_ptr()
        if blk.cond_matrix is not None:  # bias + nin_cond(concat_elu(cond)) of the current row (set_cond_row)
            d.base_out, d.base_out_batch, d.base_out_ld = blk.cond_row.data_ptr(), blk.cond_row.stride(0), blk.cond_row.stride(1)
        else:
            d.base_out, d.base_out_batch, d.base_out_ld = blk.conv_out.bias.data_ptr(), 0, 0
        self.scratch = blk.x_map.data.new_empty(d.m * (nv_f + nv_g) * width)
        d.scratch = self.scratch.data_ptr()
        self._keep += [blk.conv_input.bias, blk.conv_out.bias]

    def __call__(self, x: Tensor, row: int, elu_x: Tensor, skip=None) -> Tensor:
        """x (N, W, F), elu_x = concat_elu(x) (N, W, 2F), skip (N, W, F) or None: the block output (N, W, F)."""
        blk, d = self.blk, self.desc
        expect(x, "x", (d.n, d.m, d.f))
        expect(elu_x, "elu_x", (d.n, d.m, 2 * d.f))
        if skip is not None:
            expect(skip, "skip", (d.n, d.m, d.f))
        blk.x_map.start_row(row)
        blk.h_map.start_row(row)
        out = x.new_empty(x.shape)
        s_ptr, s0, s1 = (None, 0, 0) if skip is None else (skip.data_ptr(), skip.stride(0), skip.stride(1))
        self.lib.smoothing_row_block(ctypes.addressof(self.desc), x.data_ptr(), x.stride(0), x.stride(1), elu_x.data_ptr(),
                                     elu_x.stride(0), elu_x.stride(1), s_ptr, s0, s1, out.data_ptr())
        return out


class NativeSkip:
    """FastGatedResnet.skip_part on whole rows (the u-stream shares of the skip NINs) by the compiled matmul:
    base (or the biases of h) + elu_a @ the stream's matrix, into `out` or a new tensor."""

    def __init__(self, lib: ctypes.CDLL, blk: FastGatedResnet):
        self.lib, self.blk, width = lib, blk, lib.smoothing_vector_width()
        self.nv = -(-blk.filters // width)
        self.packed = [_packed(matrix, width) for matrix in blk.skip_mats]
        self.scratch = blk.skip_bias.new_empty(0)
        self.width = width

    def __call__(self, stream: int, elu_a: Tensor, base=None, out=None) -> Tensor:
        stream = expect_int(stream, "stream", 0, len(self.packed))
        f = self.blk.filters
        n, m, k = expect(elu_a, "elu_a", (None, None, self.packed[stream].shape[0]), "rows").shape
        rows = n * m
        if out is None:
            out = elu_a.new_empty(n, m, f)
        else:
            expect(out, "out", (n, m, f), "contiguous")
        if base is None:
            start, start_ld = expect(self.blk.skip_bias, "skip bias", (f,), "contiguous"), 0
        else:
            start, start_ld = expect(base, "base", (n, m, f), "rows"), base.stride(1)
        if self.scratch.numel() < rows * self.nv * self.width:
            self.scratch = out.new_empty(rows * self.nv * self.width)
        # one "image" of N * n outputs, each a one-row patch of k values
        self.lib.smoothing_conv_rows(1, rows, elu_a.data_ptr(), 0, elu_a.stride(1), 1, k, 0,
                                     self.packed[stream].data_ptr(), self.nv, f, start.data_ptr(), 0, start_ld,
                                     out.data_ptr(), self.scratch.data_ptr())
        return out


def attach(lib: ctypes.CDLL, trunk) -> None:
    """Route a fast._CachedTrunk's work through the library: the ul blocks at a pixel as chains
    (trunk.native), the u rows' concat_elu, the convs outside the u blocks, each u block's row, and the
    skip NINs' row shares."""
    trunk.native = NativeChains(lib, trunk.up_ul, trunk.down_ul, trunk.widths)
    trunk.concat_elu = NativeConcatElu(lib)
    u_blocks = [b for group in trunk.up_u + trunk.down_u for b in group]
    for conv in [trunk.u_init, trunk.ul_init_up, *trunk.downsize_u]:
        conv.native = NativeRowConv(lib, conv)
    for blk in u_blocks:
        blk.concat_elu = trunk.concat_elu
        blk.native_row = NativeRowBlock(lib, blk)
    for blk in [b for group in trunk.down_u + trunk.up_ul + trunk.down_ul for b in group]:
        blk.native_skip = NativeSkip(lib, blk)
