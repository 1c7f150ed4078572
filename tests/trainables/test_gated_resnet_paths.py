"""Every implementation of the gated resnet computes layers.gated_resnet_reference.

One reference (plain torch, evaluated in float64 from the same weights) and every fast path run on
the same block and inputs:

- module: GatedResnet.forward with the fused kernels off (the reference in the block's dtype);
- fused: GatedResnet._forward_fused, fused_elementwise's kernels as Python (uncompiled; the compiled
  ones are held to it by test_fused_elementwise.py's compiled training run);
- fast_rows / fast_columns: sampling/fast_ops.FastGatedResnet over whole rows, both cache layouts;
- fast_pixel: FastGatedResnet.pixel, one position at a time (the ul stream's blocks);
- native_row: native_blocks.cpp's row block through native_chains.NativeRowBlock and NativeSkip (the u
  stream's blocks);
- native_chain: native_blocks.cpp's pixel chain through native_chains.NativeChains (the ul stream's).

Sizes (N, F, H, W) are (3, 5, 5, 7), (1, 16, 4, 3) and (2, 7, 3, 9): part-filled vectors and row
tiles, rows narrower and wider than a tile; with 0, 1 and 2 skip streams, with and without
conditioning, in float32 and float64 (the native paths run float32 only; the pixel paths need a conv
that reads no column to the right, DownRightShiftedConv2d).

Tolerances, absolute, on outputs up to |4.4| (the largest |reference| of these cases): float32 1e-5,
about 20 float32 ulps there (one is 2^-21 = 4.8e-7); float64 1e-13, about 110 float64 ulps (2^-50).
A path rounds differently from the reference only in the order of its sums (matmuls of at most
(2 x 3 filter) * 2F = 192 products, tiled differently, multiply-adds fused where the compiler
contracts them) and in its elu and sigmoid (the native ones within 2 ulp: test_native_blocks.py):
a few ulps per step. Measured over every case here: at most 6.4e-7 (float32) and 1.4e-15 (float64)
(`PYTHONPATH=. python3` over `_cases()`, 2-core AMD EPYC VM); the float32 margin of 15x covers other
vector widths and compilers. A path that drops or misplaces a term misses by 1e-3 or more
(test_a_dropped_term_is_caught moves one bias by 0.01).
"""
from __future__ import annotations

import copy

import pytest
import torch

from tests.required import skip_unless_required
from tests.trainables.test_fast_sampling import one_thread  # noqa: F401 (an autouse fixture)
from trainables import fused_elementwise as fe
from trainables.layers import DownRightShiftedConv2d, DownShiftedConv2d, GatedResnet, gated_resnet_reference
from trainables.sampling import native_blocks
from trainables.sampling.fast_ops import FastGatedResnet, concat_elu_last
from trainables.sampling.native_chains import NativeChains, NativeConcatElu, NativeRowBlock, NativeSkip

TOLERANCE = {torch.float64: 1e-13, torch.float32: 1e-5}
CONVS = {"down": DownShiftedConv2d, "down_right": DownRightShiftedConv2d}
SHAPES = [(3, 5, 5, 7), (1, 16, 4, 3), (2, 7, 3, 9)]  # (N, F, H, W)
COND_CHANNELS = 3


def native_library():
    lib = native_blocks.load()
    if lib is None:
        skip_unless_required("native-blocks", f"native pixel steps unavailable: {native_blocks.unavailable_reason()}")
    return lib


def make_block(conv: str, filters: int, streams: int, cond: bool, dtype=torch.float32, seed=0) -> GatedResnet:
    torch.manual_seed(seed)
    block = GatedResnet(filters, CONVS[conv], skip_streams=streams, cond_channels=COND_CHANNELS if cond else 0)
    with torch.no_grad():  # random biases, so that no bias is silently dropped
        for name, p in block.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return block.to(dtype).eval()


def make_inputs(shape, streams: int, cond: bool, dtype, seed=1):
    n, f, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, h, w, generator=g, dtype=torch.float64)
    a = torch.randn(n, streams * f, h, w, generator=g, dtype=torch.float64) if streams else None
    c = torch.randn(n, COND_CHANNELS, h, w, generator=g, dtype=torch.float64) if cond else None
    return tuple(None if t is None else t.to(dtype) for t in (x, a, c))


def _row(t, r):
    """(N, C, H, W) at row r -> (N, W, C), contiguous."""
    return t[:, :, r].transpose(1, 2).contiguous()


def _row_skip(fast: FastGatedResnet, a, r, concat_elu=concat_elu_last):
    """The biases of h plus nin_skip(concat_elu(a)) at row r, stream by stream: (N, W, F), or None."""
    if a is None:
        return None
    f, skip = fast.filters, None
    for t in range(a.shape[1] // f):
        skip = fast.skip_part(t, concat_elu(_row(a[:, t * f : (t + 1) * f], r)), base=skip)
    return skip


def _rows(block, x, a, cond, layout, lib=None):
    n, f, h, w = x.shape
    fast = FastGatedResnet(block, x[:, :0, 0, 0], h, w, rows=1 if layout == "rows" else None, layout=layout)
    if lib is not None:
        fast.concat_elu = NativeConcatElu(lib)
        fast.native_row = NativeRowBlock(lib, fast)
        if a is not None:
            fast.native_skip = NativeSkip(lib, fast)
    out = x.new_empty(n, f, h, w)
    for r in range(h):
        if cond is not None:
            fast.set_cond_row(r, _row(cond, r))
        skip = _row_skip(fast, a, r, fast.concat_elu)
        out[:, :, r] = fast(_row(x, r), r, 0, skip=skip).transpose(1, 2)
    return out


def _pixels(block, x, a, cond):
    n, f, h, w = x.shape
    fast = FastGatedResnet(block, x[:, :0, 0, 0], h, w, rows=1, layout="columns")
    fast.prepare_pixels()
    out = x.new_empty(n, f, h, w)
    for r in range(h):
        if cond is not None:
            fast.set_cond_row(r, _row(cond, r))
        skip = _row_skip(fast, a, r)
        for q in range(w):
            out[:, :, r, q] = fast.pixel(x[:, :, r, q].contiguous(), r, q, skip=None if skip is None else skip[:, q])
    return out


def _chain(block, x, a, cond, lib):
    """The block as the ul stream's up block (1 skip stream, in the row term) or as its down block (2
    streams: the u share in the row term, the ul share read from an up block's input slot, whose input
    is a's second stream)."""
    n, f, h, w = x.shape
    like = x[:, :0, 0, 0]
    streams = a.shape[1] // f
    other = make_block("down_right", f, 3 - streams, False, x.dtype, seed=5)
    fast, partner = (FastGatedResnet(b, like, h, w, rows=1, layout="columns") for b in (block, other))
    up, down = (fast, partner) if streams == 1 else (partner, fast)
    for b in (up, down):
        b.prepare_pixels()
        b.row_term.zero_()
    chains = NativeChains(lib, [[up]], [[down]], [w])
    out = x.new_empty(n, f, h, w)
    for r in range(h):
        if cond is not None:
            fast.set_cond_row(r, _row(cond, r))
        fast.skip_part(0, concat_elu_last(_row(a[:, :f], r)), out=fast.row_term)
        up.start_row(r)
        down.start_row(r)
        for q in range(w):
            if streams == 1:
                out[:, :, r, q] = chains.run(chains.up[0][q], x[:, :, r, q].contiguous())
            else:
                chains.run(chains.up[0][q], a[:, f:, r, q].contiguous())  # leaves concat_elu(a's ul stream) in its slot
                out[:, :, r, q] = chains.run(chains.down[0][q], x[:, :, r, q].contiguous())
    return out


def _module(block, x, a, cond):
    fe.set_enabled(False)
    return block(x, a, cond)


def _fused(block, x, a, cond):
    fe.set_enabled(True, compiled=False)
    return block._forward_fused(x, a, cond)


PATHS = {
    "module": (_module, {"native": False, "pixel": False}),
    "fused": (_fused, {"native": False, "pixel": False}),
    "fast_rows": (lambda b, x, a, c: _rows(b, x, a, c, "rows"), {"native": False, "pixel": False}),
    "fast_columns": (lambda b, x, a, c: _rows(b, x, a, c, "columns"), {"native": False, "pixel": False}),
    "fast_pixel": (_pixels, {"native": False, "pixel": True}),
    "native_row": (lambda b, x, a, c, lib: _rows(b, x, a, c, "rows", lib), {"native": True, "pixel": False}),
    "native_chain": (_chain, {"native": True, "pixel": True, "streams": (1, 2)}),
}


def _cases():
    for path, (_, needs) in PATHS.items():
        for conv in CONVS:
            for streams in needs.get("streams", (0, 1, 2)):
                for dtype in (torch.float32, torch.float64):
                    if (needs["pixel"] and conv != "down_right") or (needs["native"] and dtype != torch.float32):
                        continue
                    for cond in (False, True):
                        for shape in (SHAPES * 2)[streams + cond :][:2]:  # two of the three, rotating
                            yield pytest.param(path, conv, streams, cond, dtype, shape,
                                               id=f"{path}-{conv}-s{streams}-{'cond' if cond else 'nocond'}-"
                                                  f"{str(dtype)[6:]}-{'x'.join(map(str, shape))}")


@pytest.fixture(autouse=True)
def fused_defaults():
    yield
    fe.set_enabled(True)


@pytest.mark.parametrize("path,conv,streams,cond,dtype,shape", list(_cases()))
def test_path_equals_the_reference(path, conv, streams, cond, dtype, shape):
    run, needs = PATHS[path]
    block = make_block(conv, shape[1], streams, cond, dtype)
    x, a, c = make_inputs(shape, streams, cond, dtype)
    with torch.no_grad():
        expected = gated_resnet_reference(copy.deepcopy(block).double(), *(None if t is None else t.double()
                                                                             for t in (x, a, c)))
        got = run(block, x, a, c, native_library()) if needs["native"] else run(block, x, a, c)
    assert got.dtype == dtype and got.shape == expected.shape
    error = (got.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype], f"{path}: max |difference| {error:.3g} > {TOLERANCE[dtype]:g}"


@pytest.mark.parametrize("path", ["fast_rows", "fast_pixel", "native_row", "native_chain"])
def test_a_dropped_term_is_caught(path):
    """The tolerance is tight enough to see a wrong bias: the same path with conv_out's bias moved by 0.01."""
    run, needs = PATHS[path]
    block = make_block("down_right", 5, 2, True)
    x, a, c = make_inputs((3, 5, 4, 5), 2, True, torch.float32)
    with torch.no_grad():
        expected = gated_resnet_reference(copy.deepcopy(block).double(), x.double(), a.double(), c.double())
        block.conv_out.conv.bias.add_(1e-2)
        got = run(block, x, a, c, native_library()) if needs["native"] else run(block, x, a, c)
    assert (got.double() - expected).abs().max().item() > TOLERANCE[torch.float32]
