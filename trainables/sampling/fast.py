"""Fast exact autoregressive sampling for PixelCNN++: every activation is computed once.

`fast_sample` is a drop-in for `trainables.sampling.naive.sample`: same signature, same
uniforms (pixel (i, j) reads only the uniforms at (i, j)), the same per-pixel draw
(`likelihoods.sample_*_mol`'s arithmetic on the mixture parameters of that pixel, in
`pixel_draw.PixelDraw`, which transforms the uniforms once per image). It differs mainly
in how those parameters are computed: instead of a full forward pass per pixel (H*W
passes), each activation of the network is computed exactly once, at the first step
that needs it, in the spirit of Ramachandran et al. 2017 ("Fast Generation for
Convolutional Autoregressive Models") adapted to PixelCNN++'s two streams, its
three resolutions and its skip connections.

Why it is exact. The network is causal (tests/trainables/test_pixelcnnpp.py): the
output at (i, j) depends only on pixels before (i, j) in raster order. Every activation
in its receptive field therefore depends only on those pixels too, so it has its final
value as soon as the pixels before (i, j) are drawn: computing it then, once, gives the
number the naive sampler's full pass would compute. What remains is a schedule in
which every value is computed before it is read; the caches start as NaN, so a schedule
error shows up as NaN samples (the tests would fail), never as silently wrong ones.

The schedule, with the receptive fields read off the layers (layers.py):

- Level s = 0, 1, 2 is the resolution H/2^s; the stride-2 resizes map level-s position
  (r, c) to level-0 position (r*2^s, c*2^s).
- u stream (DownShiftedConv2d, filter (2, 3), pad (1, 1, 1, 0)): output (r, c) reads
  rows r-1..r and columns c-1..c+1 of its input, so a row needs the row above and the
  same row to the right. The first u layer is shifted down (shift_output_down), so the
  whole u stream at level-0 row i depends only on pixel rows < i; the stride-2
  downsizing (rows 2r-1..2r), the transposed convs (filter height 2 = stride: output
  row R reads input row R//2 only) and the skip NINs (1x1) keep that true at every
  level, and the u stream never reads ul. Hence: when row i starts, compute whole
  rows of the u stream: level 0 row i, and level s row i/2^s when 2^s divides i
  (up pass by rising level, down pass by falling level; a down-pass row at level s
  reads the upsampled row from level s+1, computed at level-0 row 2^(s+1)*(r//2) <= i).
- ul stream (DownRightShiftedConv2d, filter (2, 2), pad (1, 0, 1, 0): reads rows r-1..r,
  columns c-1..c; ul_init_left (2, 1) shifted right reads column c-1): output (r, c)
  never reads right of c or below r. Hence at step (i, j), level s computes its single
  position (i/2^s, j/2^s) when 2^s divides i and j: the downsizing reads level s-1 at
  rows 2r-1..2r, columns 2c-1..2c, i.e. positions computed at this or earlier steps;
  the transposed conv to level s-1 (filter (2, 2) = stride, no crop at top/left:
  output (R, C) reads input (R//2, C//2) only) writes the 2x2 block it determines,
  read at steps (i, j) and later. Within a step: up pass by rising level, down pass
  by falling level, head at level 0. The u-stream terms of the ul NINs (the ul blocks'
  skip input is u, or cat(u, ul_skip) in the down pass) are computed per row.
- Within a gated resnet both convs are shifted, so both its input and its hidden
  activation h are cached (`fast_ops.FastGatedResnet`).

- The denoiser's conditioning (pixelcnnpp.py: features of all of x~, added before the
  gate of every gated resnet) does not depend on x: the encoder runs once on x~, and
  when row i starts, each block of level s with 2^s dividing i gets its pre-gate term
  for row i/2^s (`FastGatedResnet.set_cond_row`), read by that row's u and ul steps.
- The stacked denoiser (denoiser_conditioning="stacked") is the unconditional network on
  x~ above x, 2H x W, whose top H rows are given: their activations are computed from
  x~ a whole row at a time (given_rows.py), then rows H..2H-1 are drawn as above.

The loop: per row, the u stream and the row's terms eagerly (`_CachedTrunk.u_row`, which also
slides every band to the row, `start_row`), then one pixel step per column (ul_pixel, the
draw, the writes of the drawn value). The steps read and write only memory allocated once,
at the same places from row to row, so that on a GPU each distinct step can be captured once
in a CUDA graph and replayed (`cuda_graphs=True`, pixel_steps.py; audited on the CPU by the
tests).

Cost: per pixel one matmul per conv at level 0 (and at levels 1, 2 on 1/4 and 1/16 of
the pixels) plus the draw, instead of a full forward pass. On the CPU in float32 the ul blocks
of each pass at a pixel run as one compiled call, and so does each u block's row
(native_chains.py, native_blocks.cpp): ~100 small torch operations per pixel cost more than
their arithmetic, and MKL runs these small matmuls at less than half the speed the CPU allows. Memory: every cached map
(two per gated resnet) keeps only the band of rows its readers need, two rows (the
current one and the one above), so the caches take about 2 / H of the activations of
one forward pass; the denoiser adds its encoder's features, kept whole (4/3 of one
F-channel map). Effective weight-normalised weights are computed once per call.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils import parametrize

from trainables.sampling.fast_ops import ActivationMap, FastGatedResnet, ShiftedConv, concat_elu_last
from trainables.sampling.given_rows import prefill
from trainables.sampling.pixel_draw import PixelDraw
from trainables.sampling import native_blocks
from trainables.sampling.native_chains import attach
from trainables.sampling.pixel_steps import PixelSteps
from trainables.layers import DownRightShiftedDeconv2d, DownShiftedDeconv2d
from trainables.likelihoods import Uniforms, draw_uniforms
from trainables.pixelcnnpp import PixelCNNpp


def _check_deconv(module, *, column_local: bool) -> None:
    """Output row R of the transposed conv must read input row R // stride only (and
    column C input column C // stride only when column_local): filter = stride, no crop."""
    deconv = module.deconv
    kh, kw = deconv.kernel_size
    sh, sw = deconv.stride
    if kh != sh or (column_local and (kw != sw or not isinstance(module, DownRightShiftedDeconv2d))):
        raise ValueError(f"fast sampling needs filter = stride in the upsampling, got {module}")
    if not column_local and not isinstance(module, DownShiftedDeconv2d):
        raise ValueError(f"unexpected u-stream upsampling {module}")


def _pixel_upsample_matrix(module) -> tuple[Tensor, Tensor]:
    """The ul upsampling (filter = stride = 2, output (R, C) reads input (R // 2, C // 2)) of one
    position as a matmul: (F, 2 * 2 * F) with outputs in (row, column, channel) order, and its bias."""
    weight = module.deconv.weight.detach()  # (Cin, Cout, 2, 2), effective (weight-normalised)
    matrix = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return matrix, module.deconv.bias.detach().repeat(weight.shape[2] * weight.shape[3])


def _upsample(module, x: Tensor) -> Tensor:
    """Run a layers.*Deconv2d on positions (N, n, F) of one row: (N, stride, stride*n, F)."""
    out = module(x.permute(0, 2, 1).unsqueeze(2))  # (N, F, stride, stride * n)
    return out.permute(0, 2, 3, 1)


class _CachedTrunk:
    """The PixelCNN++ trunk and head evaluated row by row (u) and pixel by pixel (ul)."""

    def __init__(self, model: PixelCNNpp, like: Tensor, height: int, width: int, cond: Optional[list] = None,
                 native=None):
        self.levels = len(model.up_stages)
        # The denoiser's conditioning features by level, channels last: (N, H_s, W_s, F).
        self.cond = None if cond is None else [c.permute(0, 2, 3, 1) for c in cond]
        sizes = [(height >> s, width >> s) for s in range(self.levels)]
        self.widths = [w for _, w in sizes]
        for resize in list(model.downsize_u) + list(model.downsize_ul):
            if resize.conv.stride != (2, 2):
                raise ValueError("fast sampling assumes stride-2 resizing between levels")
        for up in model.upsize_u:
            _check_deconv(up, column_local=False)
        for up in model.upsize_ul:
            _check_deconv(up, column_local=True)

        # Cached maps keep a band of rows, not the whole image (ActivationMap): a block's
        # convs read the row being computed and the `top` = 1 rows above it.
        # The u stream is computed a row at a time, the ul stream a position at a time: their
        # maps are laid out for that ("rows" for conv2d, "columns" for per-position patch views).
        def blocks(stream, s, layout):
            return [FastGatedResnet(b, like, *sizes[s], rows=1, layout=layout) for b in stream]

        self.up_u = [blocks(model.up_stages[s].u_stream, s, "rows") for s in range(self.levels)]
        self.up_ul = [blocks(model.up_stages[s].ul_stream, s, "columns") for s in range(self.levels)]
        down = [model.down_stages[self.levels - 1 - s] for s in range(self.levels)]  # by level
        self.down_u = [blocks(down[s].u_stream, s, "rows") for s in range(self.levels)]
        self.down_ul = [blocks(down[s].ul_stream, s, "columns") for s in range(self.levels)]

        self.u_init, self.ul_init_up = ShiftedConv(model.u_init), ShiftedConv(model.ul_init_up)
        self.ul_init_left = ShiftedConv(model.ul_init_left)
        inits = (self.u_init, self.ul_init_up, self.ul_init_left)
        margins = tuple(max(conv.margins[k] for conv in inits) for k in range(3))
        # u_init, shifted down, reads rows up to i - 2 once row i is being written.
        x_rows = 1 + max(conv.shift_row for conv in inits)
        fill = torch.tensor([float("nan")] * model.in_channels + [1.0])  # the "ones" channel
        self.x_map = ActivationMap(like, height, width, model.in_channels + 1, margins, rows=x_rows, fill=fill,
                                   layout="rows")

        self.downsize_u = [ShiftedConv(m) for m in model.downsize_u]  # level s -> s + 1
        self.downsize_ul = [ShiftedConv(m) for m in model.downsize_ul]
        self.upsize_u = [None] + [model.upsize_u[self.levels - 1 - s] for s in range(1, self.levels)]  # s -> s-1
        self.upsize_ul = [None] + [model.upsize_ul[self.levels - 1 - s] for s in range(1, self.levels)]
        self.upsize_ul_pixel = [None] + [_pixel_upsample_matrix(m) for m in self.upsize_ul[1:]]
        f = model.u_init.conv.out_channels  # nr_filters
        below = range(self.levels - 1)
        # Raw outputs of the last up block (read by the downsizing) and of the upsampling.
        # Downsizing to level s + 1 row p reads rows 2p-1..2p: the current row and the margin's.
        self.u_up_last = [ActivationMap(like, *sizes[s], f, self.downsize_u[s].margins, rows=1, layout="rows")
                          for s in below]
        self.ul_up_last = [ActivationMap(like, *sizes[s], f, self.downsize_ul[s].margins, rows=1) for s in below]
        # Upsampling writes `stride` rows at once, read later at the same positions.
        up_rows = [self.upsize_u[s + 1].deconv.stride[0] for s in below]
        self.u_upsized = [ActivationMap(like, *sizes[s], f, rows=up_rows[s]) for s in below]
        self.ul_upsized = [ActivationMap(like, *sizes[s], f, rows=up_rows[s]) for s in below]
        for blk in [b for level in self.up_ul + self.down_ul for b in level]:
            if blk.reads_right():
                raise ValueError("a ul-stream conv reads to the right: it cannot run pixel by pixel")
            blk.prepare_pixels()
        if self.ul_init_left.reads_right() or any(c.reads_right() for c in self.downsize_ul):
            raise ValueError("a ul-stream conv reads to the right: it cannot run pixel by pixel")

        self.head_matrix = model.head.conv.weight.detach()[:, :, 0, 0].t()  # head(elu(ul)): (F, P)
        self.head_bias = model.head.conv.bias.detach()
        # Every tensor a pixel step reads keeps its place from row to row (pixel_steps.py): the
        # per-row terms are written into buffers made once (ul_init_up's row here, the ul NINs'
        # u-stream terms in each ul block's row_term), and the bands slide before a row's steps.
        self.ul_init_up_row = like.new_empty(like.shape[0], width, f)  # (N, W, F)
        self.ul_init_up_cols = self.ul_init_up_row.unbind(1)
        ul_blocks = [(b, s) for s in range(self.levels) for b in self.up_ul[s] + self.down_ul[s]]
        # The maps a pixel step reads or writes, with the level their rows are counted at.
        self.step_maps = ([(self.x_map, 0)] + [(m, s) for b, s in ul_blocks for m in (b.x_map, b.h_map)]
                          + [(m, s) for s, m in enumerate(self.ul_up_last)] + [(m, s) for s, m in enumerate(self.ul_upsized)])
        # native (a native_blocks library): the gated resnets as compiled calls (native_chains.attach)
        self.native, self.concat_elu = None, concat_elu_last
        if native is not None:
            attach(native, self)

    def maps(self) -> list[ActivationMap]:
        """Every cache, for accounting."""
        blocks = [b for group in self.up_u + self.up_ul + self.down_u + self.down_ul for b in group]
        extra = self.u_up_last + self.ul_up_last + self.u_upsized + self.ul_upsized
        return [self.x_map] + [m for b in blocks for m in (b.x_map, b.h_map)] + extra

    def start_row(self, i: int) -> None:
        """Slide the bands the pixel steps of level-0 row i write to, so that none slides inside a step."""
        self.x_map.start_row(i)
        for s in range(self.levels):
            if i % (1 << s):
                continue
            r = i >> s
            for blk in self.up_ul[s] + self.down_ul[s]:
                blk.start_row(r)
            if s < self.levels - 1:
                self.ul_up_last[s].start_row(r)
            if s > 0:
                self.ul_upsized[s - 1].start_row(2 * r + 1)  # the upsampling writes rows 2r and 2r + 1

    def step_key(self, i: int) -> tuple:
        """What fixes the places a pixel step of row i reads and writes, apart from its column:
        which levels run (i mod 2^(levels-1)) and where each band holds its current row."""
        return (i % (1 << (self.levels - 1)),) + tuple((i >> s) - m.first for m, s in self.step_maps)

    def u_row(self, i: int) -> None:
        """The u stream for level-0 row i (and level-s row i/2^s when 2^s divides i), then the
        row's start for the pixel steps (start_row)."""
        levels = [s for s in range(self.levels) if i % (1 << s) == 0]
        if self.cond is not None:
            for s in levels:
                for blk in self.up_u[s] + self.up_ul[s] + self.down_u[s] + self.down_ul[s]:
                    blk.set_cond_row(i >> s, self.cond[s][:, i >> s])
        skips = {}
        for s in levels:  # up pass
            r, w = i >> s, self.widths[s]
            if s == 0:
                x = self.u_init(self.x_map, r, 0, w)  # (N, W, F)
                self.ul_init_up_row.copy_(self.ul_init_up(self.x_map, r, 0, w))
            else:
                x = self.downsize_u[s - 1](self.u_up_last[s - 1], r, 0, w)
            elu_x = self.concat_elu(x)  # each u value's concat_elu once: its block's input and the skips read it
            skips[s] = [(x, elu_x)]
            for blk, ul_blk in zip(self.up_u[s], self.up_ul[s]):
                x = blk(x, r, 0, elu_x=elu_x)
                elu_x = self.concat_elu(x)
                skips[s].append((x, elu_x))
                ul_blk.skip_part(0, elu_x, out=ul_blk.row_term)  # ul's skip input is this u
            if s < self.levels - 1:
                self.u_up_last[s].write(r, 0, x)
        for s in reversed(levels):  # down pass
            r, w = i >> s, self.widths[s]
            if s == self.levels - 1:
                x, elu_x = skips[s].pop()
            else:
                x = self.u_upsized[s].read(r, 0, w)
                elu_x = self.concat_elu(x)
            for blk, ul_blk in zip(self.down_u[s], self.down_ul[s]):
                x = blk(x, r, 0, skip=blk.skip_part(0, skips[s].pop()[1]), elu_x=elu_x)
                elu_x = self.concat_elu(x)
                ul_blk.skip_part(0, elu_x, out=ul_blk.row_term)  # the u half of cat(u, ul_skip)
            if s > 0:
                rows = _upsample(self.upsize_u[s], x)  # (N, 2, W_{s-1}, F)
                for a in range(rows.shape[1]):
                    self.u_upsized[s - 1].write(2 * r + a, 0, rows[:, a])
        self.start_row(i)

    def ul_pixel(self, i: int, j: int) -> Tensor:
        """The ul stream at level-0 pixel (i, j) (and the level-s positions it determines, where
        2^s divides i and j); returns the mixture parameters (N, P). One position per level:
        the blocks run `FastGatedResnet.pixel` (or, with `native`, each pass's blocks run as one
        compiled call, native_chains.py), and the ul skip of a down block reads the concat_elu its
        up block already cached there."""
        active = [(s, i >> s, j >> s) for s in range(self.levels) if not (i | j) & ((1 << s) - 1)]
        skips = {}
        for s, r, q in active:  # up pass
            if s == 0:
                x = self.ul_init_up_cols[q] + self.ul_init_left(self.x_map, r, q, 1)[:, 0]
            else:
                x = self.downsize_ul[s - 1](self.ul_up_last[s - 1], r, q, 1)[:, 0]
            if self.native is not None:
                x = self.native.run(self.native.up[s][q], x)
                skips[s] = [x]  # the last up output; the rest the down chain reads from the caches
            else:
                skips[s] = [x]
                for blk in self.up_ul[s]:
                    x = blk.pixel(x, r, q, skip=blk.term_cols[q])
                    skips[s].append(x)
            if s < self.levels - 1:
                self.ul_up_last[s].write(r, q, x[:, None])
        for s, r, q in reversed(active):  # down pass
            stack = skips[s]
            x = stack.pop() if s == self.levels - 1 else self.ul_upsized[s].read(r, q, 1)[:, 0]
            if self.native is not None:
                x = self.native.run(self.native.down[s][q], x)
            else:
                for blk in self.down_ul[s]:
                    skip_value, k = stack.pop(), len(stack)  # the input of up block k, or the last up output
                    up_blocks = self.up_ul[s]
                    cached = up_blocks[k].input_slot(q) if k < len(up_blocks) else concat_elu_last(skip_value)
                    x = blk.pixel(x, r, q, skip=torch.addmm(blk.term_cols[q], cached, blk.skip_mats[1]))
            if s > 0:
                matrix, bias = self.upsize_ul_pixel[s]
                block = torch.addmm(bias, x, matrix).view(x.shape[0], 2, 2, -1)  # (N, 2 rows, 2 columns, F)
                for a in range(2):
                    self.ul_upsized[s - 1].write(2 * r + a, 2 * q, block[:, a])
        elu = F.elu(x) if self.native is None else self.native.elu(x)
        return torch.addmm(self.head_bias, elu, self.head_matrix)


# CPU threads of the sampling loop. Its operations are small (per pixel: matmuls of batch x
# ~320 x 80): at the MNIST configuration a second thread gains nothing on 2 idle cores (0.79
# against 0.80 s) and costs 5x with the cores busy (86x under heavier load: threads spin-waiting
# for a descheduled partner), so one thread, never slower than more (bench_sampler_threads.py).
CPU_THREADS = 1


class _cpu_threads:
    """torch's intra-op threads set to `count` for a block (None or a CUDA device: left alone)."""

    def __init__(self, count: Optional[int]):
        self.count = count

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.count:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        if self.count and torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)


@torch.no_grad()
def fast_sample(
    model: PixelCNNpp,
    n: int,
    shape: tuple[int, int, int],
    *,
    discretized: bool,
    x_noisy: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    uniforms: Optional[Uniforms] = None,
    temperature: float = 1.0,
    log: Optional[Callable[[str], None]] = None,
    threads: Optional[int] = None,
    cuda_graphs: bool = False,
    audit_steps: bool = False,
    native: Optional[bool] = None,
) -> Tensor:
    """Autoregressive samples (N, C, H, W), the distribution of `sampling.sample`, fast.

    Same arguments and randomness as `sampling.sample`: with the same `uniforms` (or the
    same `generator` state) it returns the same images up to float rounding. Samples
    are unclamped. The model is in eval mode (no dropout) for the duration of the call.
    On the CPU it runs on `threads` torch threads (default CPU_THREADS), whatever the
    process's setting, which it restores afterwards.

    cuda_graphs: on a CUDA device, capture each distinct pixel step once in a CUDA graph and
    replay it (pixel_steps.py); elsewhere the steps run as without it. It has not yet run on
    a GPU: benchmarks/gpu_check.py measures it and checks its samples against the eager steps.
    audit_steps: check, on any device, that every pixel step could be replayed as a graph
    (pixel_steps.PixelSteps); it raises StepAuditError where one could not. Slow: for tests.
    native: run the gated resnets as compiled calls (each pass's ul blocks at a pixel, each u block's
    row: native_chains.py, native_blocks.cpp, built on first use with the machine's C++ compiler);
    only for a float32 model on the CPU.
    None (default): where it can, else on torch operations, with a warning once per process if
    the library cannot be built; True: required (RuntimeError if it cannot); False: never. Off
    with audit_steps (the audit sees torch operations only) and on CUDA devices.
    """
    c, h, w = shape
    factor = 1 << (len(model.up_stages) - 1)  # two stride-2 resizes: 4
    if h % factor or w % factor:
        raise ValueError(f"height and width must be divisible by {factor}, got {(h, w)}")
    if model.conditional != (x_noisy is not None):
        raise ValueError("x_noisy is required for (and only for) a conditional model")
    if x_noisy is not None and tuple(x_noisy.shape) != (n, c, h, w):
        raise ValueError(f"x_noisy must have shape {(n, c, h, w)}, got {tuple(x_noisy.shape)}")
    param = next(model.parameters())
    if uniforms is None:
        uniforms = draw_uniforms(n, c, model.num_mixtures, h, w, generator=generator, device=param.device)
    draw = PixelDraw(uniforms, c, temperature, quantize=discretized)
    like = param.new_empty(n, 0)
    given = h if model.stacked else 0  # the stacked denoiser: x~'s h rows above the h drawn ones
    was_training = model.training
    model.eval()
    cpu_threads = (threads or CPU_THREADS) if param.device.type == "cpu" else None
    try:
        with parametrize.cached(), _cpu_threads(cpu_threads):
            cond = model.encoder(x_noisy.to(param)) if model.encoder is not None else None  # x~ once, all levels
            trunk = _CachedTrunk(model, like, given + h, w, cond,
                                 native=native_blocks.library_for(native, param, audit_steps))
            if given:
                prefill(trunk, x_noisy.to(param))  # rows 0..h-1 of the stacked image
            pixels = param.new_zeros(h, w, n, c)  # pixel-major while drawing: each pixel a contiguous view
            drawn_row = param.new_zeros(w, n, c)  # the row being drawn, one buffer for every row
            drawn = drawn_row.unbind(0)

            def start(i: int) -> None:  # i: the row drawn, given + i: its row in the trunk's image
                trunk.u_row(given + i)
                draw.begin_row(i)

            def step(i: int, j: int) -> None:
                value = draw(trunk.ul_pixel(given + i, j), i, j)  # (N, C) from the mixture parameters (N, P)
                drawn[j].copy_(value)
                trunk.x_map.write(given + i, j, value.view(n, 1, c))

            steps = PixelSteps(start, step, lambda i: trunk.step_key(given + i), w, param.device, graphs=cuda_graphs,
                               audit=audit_steps)
            for i in range(h):
                steps.row(i)
                pixels[i].copy_(drawn_row)
                if log is not None and (i + 1) % max(1, h // 4) == 0:
                    log(f"  sampled row {i + 1}/{h}")
    finally:
        model.train(was_training)
    return pixels.permute(2, 3, 0, 1).contiguous()  # (N, C, H, W)
