"""The fast sampler draws what the naive one draws: same uniforms -> same pixels.

Exactness is checked in float64, where rounding differences (~1e-15) cannot move a
discretized value across a bin edge or flip a mixture component, so any difference is
a bug, not noise; one float32 run checks the default dtype. At 28x28 one case runs the
naive sampler itself (784 full passes); the others use its one-pass equivalent: by
causality the naive sampler computes pixel (i, j)'s parameters from the pixels before
(i, j), i.e. from the final image, so redrawing every pixel of a sample from one full
forward pass on it with the same uniforms must give the sample back.
"""
import pytest
import torch

from trainables.sampling.fast import _CachedTrunk, fast_sample
from trainables.sampling.fast_ops import ActivationMap, ShiftedConv
from trainables.likelihoods import draw_uniforms, sample_continuous_mol, sample_discretized_mol
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling.naive import sample

KINDS = {  # kind: (conditional, discretized)
    "smoothed": (False, False),
    "baseline": (False, True),
    "denoiser": (True, True),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(channels, conditional, nr_resnet=1, filters=8, mixtures=3, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = PixelCNNpp(channels, filters, nr_resnet, mixtures, conditional=conditional).to(dtype)
    with torch.no_grad():  # random biases, so that no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model.eval()


def _inputs(model, n, shape, dtype=torch.float64, seed=1):
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    uniforms = draw_uniforms(n, c, model.num_mixtures, h, w, generator=g, dtype=dtype)
    x_noisy = torch.randn(n, c, h, w, generator=g, dtype=dtype) * 0.6 if model.conditional else None
    return uniforms, x_noisy


def _naive(model, n, shape, discretized, uniforms, x_noisy, temperature=1.0):
    with _default_dtype(uniforms[0].dtype):  # the naive sampler allocates in the default dtype
        return sample(model, n, shape, discretized=discretized, x_noisy=x_noisy, uniforms=uniforms, temperature=temperature)


class _default_dtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_equals_naive_8x8(kind, channels):
    conditional, discretized = KINDS[kind]
    model = _model(channels, conditional, nr_resnet=2 if (channels, kind) == (1, "baseline") else 1)
    shape, n = (channels, 8, 8), 2
    uniforms, x_noisy = _inputs(model, n, shape)
    naive = _naive(model, n, shape, discretized, uniforms, x_noisy)
    fast = fast_sample(model, n, shape, discretized=discretized, x_noisy=x_noisy, uniforms=uniforms)
    assert fast.shape == (n, *shape) and fast.dtype == torch.float64
    assert (fast - naive).abs().max() < 1e-4
    assert (fast - naive).abs().max() < 1e-10, "float64 leaves no room for more than rounding"


@pytest.mark.slow  # 784 full passes of the naive sampler: ~11 CPU-s; the 8x8 cases above run fast
def test_fast_equals_naive_28x28_denoiser():
    """The naive sampler itself at 28x28 (levels 28, 14, 7): the conditioning rows of
    every level (set once per row) and the odd width 7 at the lowest level."""
    model = _model(1, conditional=True, filters=4, mixtures=2)
    shape, n = (1, 28, 28), 1
    uniforms, x_noisy = _inputs(model, n, shape)
    naive = _naive(model, n, shape, True, uniforms, x_noisy)
    fast = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms)
    assert (fast - naive).abs().max() < 1e-4


def _redraw(model, x, uniforms, discretized, x_noisy=None, temperature=1.0):
    """What the naive sampler draws given the final image: one pass, every pixel redrawn."""
    params = model(x, x_noisy) if x_noisy is not None else model(x)  # (N, P, H, W)
    draw = sample_discretized_mol if discretized else sample_continuous_mol
    return draw(params, channels=x.shape[1], uniforms=uniforms, temperature=temperature)


@pytest.mark.parametrize("channels,kind", [(1, "smoothed"), (3, "baseline"), (3, "denoiser")])
def test_fast_sample_is_the_naive_fixed_point_28x28(channels, kind):
    conditional, discretized = KINDS[kind]
    model = _model(channels, conditional, filters=4)
    shape, n = (channels, 28, 28), 2
    uniforms, x_noisy = _inputs(model, n, shape)
    fast = fast_sample(model, n, shape, discretized=discretized, x_noisy=x_noisy, uniforms=uniforms)
    with torch.no_grad():
        redrawn = _redraw(model, fast, uniforms, discretized, x_noisy)
    assert torch.isfinite(fast).all()
    assert (fast - redrawn).abs().max() < 1e-10


def test_denoiser_same_generator_same_pixels():
    """A fixed x~ and the same generator seed: fast and naive consume the randomness
    identically and draw the same clean image, at a temperature below 1 too."""
    model = _model(3, conditional=True, nr_resnet=1)
    shape, n = (3, 8, 8), 3
    x_noisy = torch.linspace(-1.5, 1.5, n * 3 * 64, dtype=torch.float64).reshape(n, *shape)
    with _default_dtype(torch.float64):
        naive = sample(model, n, shape, discretized=True, x_noisy=x_noisy,
                       generator=torch.Generator().manual_seed(7), temperature=0.8)
        fast = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy,
                           generator=torch.Generator().manual_seed(7), temperature=0.8)
    assert torch.equal(fast, naive)
    assert torch.equal(fast, ((fast + 1) * 127.5).round() / 127.5 - 1), "values on the 8-bit grid"


def test_denoiser_fast_sample_follows_x_noisy_at_every_level():
    """The conditioning term is read at the right row and column of every level. Drawn
    continuous (no rounding to the 8-bit grid), any wrong parameter moves the sample, so
    the fixed-point check is exact for the parameters themselves; 32x32 RGB (levels 32,
    16, 8). An x~ that differs only in its last pixel (seen by every output through the
    encoder's global term) changes even the first pixel."""
    model = _model(3, conditional=True, filters=4, mixtures=2)
    shape, n = (3, 32, 32), 1
    uniforms, x_noisy = _inputs(model, n, shape)
    other = x_noisy.clone()
    other[:, :, -1, -1] += 3.0
    samples = []
    for noisy in (x_noisy, other):
        fast = fast_sample(model, n, shape, discretized=False, x_noisy=noisy, uniforms=uniforms)
        with torch.no_grad():
            assert (fast - _redraw(model, fast, uniforms, False, noisy)).abs().max() < 1e-10
        samples.append(fast)
    assert (samples[0][:, :, 0, 0] - samples[1][:, :, 0, 0]).abs().min() > 1e-8


def test_float32_matches_naive_and_leaves_training_mode():
    model = _model(1, conditional=False, nr_resnet=1, dtype=torch.float32)
    model.train()
    shape, n = (1, 8, 8), 2
    uniforms, _ = _inputs(model, n, shape, dtype=torch.float32)
    naive = _naive(model, n, shape, False, uniforms, None)
    fast = fast_sample(model, n, shape, discretized=False, uniforms=uniforms)
    assert fast.dtype == torch.float32 and (fast - naive).abs().max() < 1e-4
    assert model.training


def test_dropout_is_off_while_sampling():
    model = PixelCNNpp(1, 8, 1, 3, dropout=0.5).double().train()
    shape, n = (1, 8, 8), 2
    uniforms, _ = _inputs(model, n, shape)
    first = fast_sample(model, n, shape, discretized=True, uniforms=uniforms)
    assert torch.equal(first, fast_sample(model, n, shape, discretized=True, uniforms=uniforms))


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("name", ["u_init", "ul_init_up", "ul_init_left", "downsize_u.0", "downsize_ul.0"])
def test_shifted_conv_matmul_equals_module_everywhere(name, layout):
    """The patch arithmetic of each conv kind (shifts, strides, paddings) at every output, in both
    cache layouts (a run of outputs on a "rows" map is conv2d on the band, one output a matmul)."""
    model = _model(1, conditional=False)
    module = model.get_submodule(name)
    cin = module.conv.in_channels
    x = torch.randn(2, cin, 8, 12, dtype=torch.float64)
    expected = module(x).permute(0, 2, 3, 1)  # (N, H', W', Cout)
    conv = ShiftedConv(module)
    inp = ActivationMap(x[:, :0, 0, 0], 8, 12, cin, conv.margins, layout=layout)
    for r in range(8):
        inp.write(r, 0, x[:, :, r].transpose(1, 2))
    for r in range(expected.shape[1]):
        assert (conv(inp, r, 0, expected.shape[2]) - expected[:, r]).abs().max() < 1e-12
        assert (conv(inp, r, 3, 1) - expected[:, r, 3:4]).abs().max() < 1e-12


def test_unwritten_cache_reads_as_nan():
    """A schedule that reads a value before computing it yields NaN, not a wrong sample."""
    model = _model(1, conditional=False)
    conv = ShiftedConv(model.u_init)
    inp = ActivationMap(torch.zeros(1, 0, dtype=torch.float64), 8, 8, 2, conv.margins)
    inp.write(0, 0, torch.ones(1, 8, 2, dtype=torch.float64))
    assert torch.isfinite(conv(inp, 1, 0, 8)).all()  # reads row 0 and the zero margin
    assert torch.isnan(conv(inp, 2, 0, 8)).all()  # reads row 1, never written


def test_sliding_band_keeps_the_rows_convs_read_and_drops_the_rest():
    like = torch.zeros(1, 0, dtype=torch.float64)
    band = ActivationMap(like, 6, 4, 2, margins=(1, 1, 1), rows=1, fill=torch.tensor([float("nan"), 1.0]))
    for r in range(3):
        band.write(r, 0, torch.full((1, 4, 1), float(r), dtype=torch.float64))
    assert band.band_rows == 2  # the margin row + one row
    window = band.patches(1, 2, -1, 4, 3, 1).view(4, 3, 2, 2)  # rows 1..2, all columns: (n, kw, kh, C)
    assert torch.equal(window[1, 1, :, 0], torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(window[1, 1, :, 1], torch.ones(2, dtype=torch.float64))  # the fill channel
    assert torch.equal(window[0, 0], torch.zeros(2, 2, dtype=torch.float64))  # left margin
    with pytest.raises(AssertionError):
        band.read(0, 0, 4)  # row 0 has left the band


def test_cache_memory_does_not_grow_with_height():
    model = _model(3, conditional=False, nr_resnet=2)
    like = torch.zeros(2, 0, dtype=torch.float64)
    nbytes = [sum(m.data.nbytes for m in _CachedTrunk(model, like, h, 16).maps()) for h in (8, 32)]
    assert nbytes[0] == nbytes[1]


def test_bad_arguments_are_refused():
    model = _model(1, conditional=True)
    with pytest.raises(ValueError, match="x_noisy"):
        fast_sample(model, 1, (1, 8, 8), discretized=True)
    with pytest.raises(ValueError, match="x_noisy must have shape"):
        fast_sample(model, 1, (1, 8, 8), discretized=True, x_noisy=torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="divisible by 4"):
        fast_sample(_model(1, conditional=False), 1, (1, 6, 8), discretized=True)


def test_sampling_loop_runs_on_its_own_thread_count_and_restores_the_process_setting(monkeypatch):
    """One thread by default (more never helps these small ops and costs up to ~50x on busy
    cores: benchmarks/bench_sampler_threads.py), `threads=` when forced; the caller's setting after."""
    import trainables.sampling.fast as fast

    seen = []
    real_draw = fast.PixelDraw.__call__
    monkeypatch.setattr(fast.PixelDraw, "__call__",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), real_draw(*a, **k))[1])
    model = _model(1, conditional=False)
    torch.set_num_threads(2)
    fast_sample(model, 1, (1, 4, 4), discretized=True)
    assert set(seen) == {fast.CPU_THREADS} == {1} and torch.get_num_threads() == 2
    seen.clear()
    torch.set_num_threads(1)
    fast_sample(model, 1, (1, 4, 4), discretized=True, threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == 1


@pytest.mark.parametrize("channels,conditional",  # the meta device dispatches slowly: the RGB denoiser is slow
                         [(1, False), pytest.param(3, True, marks=pytest.mark.slow)])
def test_every_tensor_stays_on_the_models_device(channels, conditional):
    """A partial check of the GPU path without a GPU. On the meta device (shapes, no data),
    element-wise operations refuse a CPU tensor among meta ones (matmuls and convs do not
    check), so a CPU tensor made along the way fails here wherever one of them reads it."""
    model = _model(channels, conditional, filters=4, mixtures=2, dtype=torch.float32)
    uniforms, x_noisy = _inputs(model, 2, (channels, 8, 8), dtype=torch.float32)
    model, uniforms = model.to("meta"), tuple(u.to("meta") for u in uniforms)
    x_noisy = x_noisy.to("meta") if conditional else None
    out = fast_sample(model, 2, (channels, 8, 8), discretized=True, x_noisy=x_noisy, uniforms=uniforms)
    assert out.device.type == "meta" and out.shape == (2, channels, 8, 8)
