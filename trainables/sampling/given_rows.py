"""The stacked denoiser's given rows in the fast sampler: the activations of x~, a row at a time.

With denoiser_conditioning="stacked" (pixelcnnpp.py) the denoiser is the unconditional network run
on x~ stacked above x, (N, C, 2H, W); its top H rows are given. `fast_sample` computes their
activations from the given pixel values (`prefill`) and then draws rows H..2H-1 pixel by pixel as
it draws any model's rows, into the same caches. Only the bottom rows' uniforms are read, so the
draw is the naive sampler's on the same uniforms (tests/trainables/test_fast_stacked.py).

A given row needs no pixel steps: every pixel of it is known, so each ul layer's whole row follows
from the previous layer's (a ul conv's output at column c reads its input at columns <= c of this
row and the row above). `ul_row` is `_CachedTrunk.ul_pixel` for all the columns of a row at once,
on the same caches and in the same order (up pass by rising level, down pass by falling level,
the upsampling writing the two rows below), with the u stream's share of every ul skip from the
row's `u_row`, as ul_pixel reads it. The given rows cost about one forward pass of the network
over the top half, where stepping through them pixel by pixel would cost as much as drawing them.
"""
from __future__ import annotations

from torch import Tensor

from trainables.sampling.fast_ops import concat_elu_last


def _upsample_row(module, x: Tensor) -> Tensor:
    """layers.DownRightShiftedDeconv2d on the positions (N, n, F) of one row: (N, 2, 2n, F)."""
    out = module(x.permute(0, 2, 1).unsqueeze(2))  # (N, F, 2, 2n)
    return out.permute(0, 2, 3, 1)


def ul_row(trunk, i: int) -> None:
    """The ul stream at every column of level-0 row i (and of level-s row i/2^s where 2^s divides i),
    once the row's pixels are in trunk.x_map and its u stream has run (trunk.u_row(i))."""
    levels = [s for s in range(trunk.levels) if i % (1 << s) == 0]
    top = trunk.levels - 1
    skips = {}
    for s in levels:  # up pass
        r, w = i >> s, trunk.widths[s]
        if s == 0:
            x = trunk.ul_init_up_row + trunk.ul_init_left(trunk.x_map, r, 0, w)  # (N, W, F)
        else:
            x = trunk.downsize_ul[s - 1](trunk.ul_up_last[s - 1], r, 0, w)
        skips[s] = [x]
        for blk in trunk.up_ul[s]:
            x = blk(x, r, 0, skip=blk.row_term)  # row_term: the biases of h + the skip NIN's u share
            skips[s].append(x)
        if s < top:
            trunk.ul_up_last[s].write(r, 0, x)
    for s in reversed(levels):  # down pass
        r, w = i >> s, trunk.widths[s]
        stack = skips[s]
        x = stack.pop() if s == top else trunk.ul_upsized[s].read(r, 0, w)
        for blk in trunk.down_ul[s]:  # skip input cat(u, ul skip): u's share in row_term, the ul share here
            skip = blk.skip_part(1, concat_elu_last(stack.pop()), base=blk.row_term)
            x = blk(x, r, 0, skip=skip)
        if s > 0:
            rows = _upsample_row(trunk.upsize_ul[s], x)  # (N, 2, W_{s-1}, F)
            for a in range(rows.shape[1]):
                trunk.ul_upsized[s - 1].write(2 * r + a, 0, rows[:, a])


def prefill(trunk, given: Tensor) -> None:
    """The activations of the given rows (N, C, G, W), rows 0..G-1 of the trunk's image: per row the
    u stream (which reads only rows above), the row's pixels, then the ul stream."""
    for i in range(given.shape[2]):
        trunk.u_row(i)
        trunk.x_map.write(i, 0, given[:, :, i].transpose(1, 2))  # (N, W, C) into the channels before "ones"
        ul_row(trunk, i)
