"""The compiled pixel steps (native_blocks.cpp): its vector math and matmul against float64 references, its
builds for narrower vector units, and the fast sampler with it against the torch-operation steps and against
the naive sampler's one-pass redraw in float64 (an independent computation of the same parameters)."""
import platform
import warnings

import pytest
import torch

from tests.required import skip_unless_required
from tests.trainables.test_fast_sampling import one_thread  # noqa: F401 (an autouse fixture)
from trainables import cxx_compiler
from trainables.likelihoods import draw_uniforms, sample_continuous_mol
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling import native_blocks
from trainables.sampling.fast import fast_sample
from trainables.sampling.fast_ops import ActivationMap, ShiftedConv
from trainables.sampling.native_chains import NativeRowConv


def _library(flags=native_blocks.FLAGS):
    lib = native_blocks.load(flags)
    if lib is None:
        skip_unless_required("native-blocks", f"native pixel steps unavailable: {native_blocks.unavailable_reason(flags)}")
    return lib


def _flag_sets():
    """The machine's own build, and on x86-64 the AVX2 and the SSE2 ones (8- and 4-float vectors)."""
    sets = [native_blocks.FLAGS]
    if platform.machine() in ("x86_64", "AMD64"):
        for march in ("-march=x86-64-v3", "-march=x86-64"):
            sets.append(tuple(march if f == "-march=native" else f for f in native_blocks.FLAGS))
    return sets


def _ulps(y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """|y - reference| in units of the float32 spacing at the reference (reference in float64)."""
    spacing = (reference.float().double().abs() * 2.0**-23).clamp_min(2.0**-149)
    return (y.double() - reference).abs() / spacing


@pytest.mark.parametrize("flags", _flag_sets(), ids=lambda f: f[1])
def test_vector_math_is_within_two_ulp_of_float64(flags):
    lib = _library(flags)
    x = torch.cat([torch.linspace(-100, 100, 400_001), torch.linspace(-1, 1, 200_001),
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 88.7, -86.0])]).float()
    x64 = x.double()
    cases = {0: (torch.exp(x64), 1.0, x > -86.5), 1: (torch.expm1(x64), 1.5, None),
             2: (torch.nn.functional.elu(x64), 1.0, None), 3: (torch.sigmoid(x64), 2.0, None)}
    for op, (reference, bound, where) in cases.items():
        y = torch.empty_like(x)
        lib.smoothing_map(op, x.data_ptr(), y.data_ptr(), x.numel())
        # float32's normal range; below it (sigmoid's and exp's tails) the absolute error is below 3e-38,
        # above it (exp beyond 88.72) the value is inf, as float32 rounds it
        normal = (reference.abs() > 2.0**-126) & (reference.abs() <= torch.finfo(torch.float32).max)
        keep = normal if where is None else normal & where
        assert _ulps(y, reference)[keep].max() <= bound, f"op {op}"
        tiny = ~keep & (reference.abs() < 1)
        assert (y.double() - reference).abs()[tiny].max() < 3e-38, f"op {op}"
        assert torch.equal(y[~keep & ~tiny], reference.float()[~keep & ~tiny]), f"op {op}: inf"

    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1000.0, -1000.0])
    expected = {0: [float("nan"), float("inf"), 0.0, float("inf"), 0.0], 1: [float("nan"), float("inf"), -1.0, float("inf"), -1.0],
                2: [float("nan"), float("inf"), -1.0, 1000.0, -1.0], 3: [float("nan"), 1.0, 0.0, 1.0, 0.0]}
    for op, want in expected.items():
        y = torch.empty_like(special)
        lib.smoothing_map(op, special.data_ptr(), y.data_ptr(), special.numel())
        assert torch.allclose(y, torch.tensor(want), atol=3e-38, equal_nan=True), (op, y.tolist())


@pytest.mark.parametrize("flags", _flag_sets(), ids=lambda f: f[1])
@pytest.mark.parametrize("m,k,n", [(16, 320, 80), (16, 320, 40), (7, 33, 21), (1, 5, 3), (5, 1, 100), (448, 480, 80)])
def test_gemm_equals_float64_matmul(flags, m, k, n):
    lib = _library(flags)
    width = lib.smoothing_vector_width()
    nv = -(-n // width)
    g = torch.Generator().manual_seed(m * 1000 + k)
    a_wide = torch.randn(m, k + 3, generator=g)  # rows with a stride longer than k
    a = a_wide[:, :k]
    b = torch.randn(k, n, generator=g)
    packed = torch.zeros(k, nv * width)
    packed[:, :n] = b
    c = torch.full((m, nv * width), float("nan"))
    lib.smoothing_gemm(m, k, nv, a.data_ptr(), a_wide.stride(0), packed.data_ptr(), c.data_ptr())
    reference = a.double() @ b.double()
    scale = a.double().abs() @ b.double().abs()  # the size of the sum: rounding is relative to it
    assert ((c[:, :n].double() - reference).abs() / scale).max() < 1e-6
    assert (c[:, n:] == 0).all(), "the padding columns are exact zeros"


def _model(channels, conditional, filters, nr_resnet, seed=0):
    torch.manual_seed(seed)
    model = PixelCNNpp(channels, filters, nr_resnet, 3, conditional=conditional)
    with torch.no_grad():  # random biases, so that no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model.eval()


# (channels, conditional, filters, nr_resnet, size, batch): filters 40 is the MNIST configuration's; 8, 24
# and 40 leave the vectors of 16 part-filled in different ways; batches 5 and 3 leave row tiles of 4 part-filled.
# the MNIST configuration (40 filters at depth 2, 28x28) is slow; the other two run fast
CONFIGS = [pytest.param(1, False, 40, 2, 28, 5, marks=pytest.mark.slow), (3, True, 24, 1, 32, 3),
           (1, False, 8, 1, 16, 2)]


@pytest.mark.parametrize("channels,conditional,filters,nr_resnet,size,n", CONFIGS)
def test_native_steps_draw_what_torch_steps_and_the_naive_pass_draw(channels, conditional, filters, nr_resnet, size, n):
    """Continuous draws (no rounding to the 8-bit grid), so any wrong parameter moves the sample: the native
    steps' samples equal the torch steps' to float32 rounding, and the naive sampler's one full pass over the
    native sample, in float64 with the same uniforms, draws it back (its pixels depend only on the pixels before)."""
    _library()
    model = _model(channels, conditional, filters, nr_resnet)
    shape = (channels, size, size)
    g = torch.Generator().manual_seed(1)
    uniforms = draw_uniforms(n, channels, model.num_mixtures, size, size, generator=g)
    x_noisy = torch.randn(n, *shape, generator=g) * 0.6 if conditional else None
    native = fast_sample(model, n, shape, discretized=False, x_noisy=x_noisy, uniforms=uniforms, native=True)
    eager = fast_sample(model, n, shape, discretized=False, x_noisy=x_noisy, uniforms=uniforms, native=False)
    assert torch.isfinite(native).all()
    assert (native - eager).abs().max() < 1e-4
    model64 = model.double()
    with torch.no_grad():
        params = model64(native.double(), x_noisy.double()) if conditional else model64(native.double())
    redrawn = sample_continuous_mol(params, channels=channels, uniforms=tuple(u.double() for u in uniforms))
    assert (native.double() - redrawn).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["u_init", "ul_init_up", "downsize_u.0", "up_stages.0.u_stream.0.conv_input",
                                  "up_stages.0.u_stream.0.conv_out"])
def test_native_row_conv_equals_the_module_at_every_row(name):
    """The u rows' convs (shifted down, stride 1 and 2, 2 to 48 input channels) read in place from a "rows"
    band by the compiled matmul, with the bias or a base term added: the module's output to float32 rounding."""
    lib = _library()
    model = _model(1, False, 24, 1)
    module = model.get_submodule(name)
    module = getattr(module, "conv_input", module)
    cin = module.conv.in_channels
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, cin, 8, 12, generator=g)
    with torch.no_grad():
        expected = module(x).permute(0, 2, 3, 1)  # (N, H', W', Cout)
    conv = ShiftedConv(module)
    conv.native = NativeRowConv(lib, conv)
    inp = ActivationMap(x[:, :0, 0, 0], 8, 12, cin, conv.margins, layout="rows")
    for r in range(8):
        inp.write(r, 0, x[:, :, r].transpose(1, 2))
    width = expected.shape[2]
    for r in range(expected.shape[1]):
        assert (conv(inp, r, 0, width) - expected[:, r]).abs().max() < 1e-5
    if conv.shift_row == conv.shift_col == 0:  # a base term replaces the bias (the skip NIN's share)
        base = torch.randn(3, width, conv.out_channels, generator=g)
        r = expected.shape[1] - 1
        assert (conv(inp, r, 0, width, base=base) - (expected[:, r] - conv.bias + base)).abs().max() < 1e-5


def test_native_steps_keep_the_nan_poison():
    """A schedule error reads a cache row not yet computed, which holds NaN: the compiled steps must pass
    the NaN on (as torch's do), so that the sample shows it instead of hiding it."""
    lib = _library()
    x = torch.tensor([float("nan"), 1.0])
    out = torch.empty(4)
    lib.smoothing_concat_elu(1, 1, 2, x.data_ptr(), 0, 0, out.data_ptr(), 0, 0)
    assert torch.isnan(out[[0, 2]]).all() and out[1] == 1.0 and out[3] == pytest.approx(torch.expm1(torch.tensor(-1.0)).item())


def test_native_needs_a_float32_model_on_the_cpu():
    model = _model(1, False, 8, 1).double()
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        fast_sample(model, 1, (1, 8, 8), discretized=True, native=True)
    with pytest.raises(ValueError, match="audit_steps"):
        fast_sample(model.float(), 1, (1, 8, 8), discretized=True, native=True, audit_steps=True)
    fast_sample(model, 1, (1, 8, 8), discretized=True)  # default: float64 runs on torch operations


def test_without_a_compiler_the_sampler_warns_once_and_runs_on_torch(monkeypatch):
    monkeypatch.setattr(native_blocks, "_loaded", {})
    monkeypatch.setattr(native_blocks, "_compiler", lambda: None)
    monkeypatch.setattr(native_blocks, "_warned_native", False)
    model = _model(1, False, 8, 1)
    uniforms = draw_uniforms(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"native pixel steps unavailable \(no C\+\+ compiler"):
        first = fast_sample(model, 1, (1, 8, 8), discretized=True, uniforms=uniforms)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert torch.equal(first, fast_sample(model, 1, (1, 8, 8), discretized=True, uniforms=uniforms))
    with pytest.raises(RuntimeError, match="native pixel steps unavailable: no C\\+\\+ compiler"):
        fast_sample(model, 1, (1, 8, 8), discretized=True, native=True)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(native_blocks, "_loaded", {})
    monkeypatch.setenv(native_blocks.ENV_VAR, "0")
    assert native_blocks.load() is None
    assert native_blocks.unavailable_reason() == f"{native_blocks.ENV_VAR}=0"


def test_a_failing_compiler_is_named_with_its_error(monkeypatch, tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'fatal: broken compiler' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(native_blocks, "_loaded", {})
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("SMOOTHING_STUDY_CACHE", str(tmp_path / "cache"))
    assert native_blocks.load() is None
    assert native_blocks.unavailable_reason() == (
        f"building native_blocks.cpp failed: broken-c++ failed (exit 3): fatal: broken compiler")
    assert not list((tmp_path / "cache" / "native").iterdir()), "no partial library left behind"


@pytest.mark.slow  # compiles the C++ file twice more (~2.2 CPU-s)
def test_the_build_is_cached_by_source_compiler_flags_and_cpu(monkeypatch, tmp_path):
    _library()
    monkeypatch.setenv("SMOOTHING_STUDY_CACHE", str(tmp_path))
    compiler = native_blocks._compiler()
    first = native_blocks._build(compiler, native_blocks.FLAGS)
    built = first.stat().st_mtime_ns
    assert native_blocks._build(compiler, native_blocks.FLAGS) == first and first.stat().st_mtime_ns == built
    other = native_blocks._build(compiler, native_blocks.FLAGS + ("-DSMOOTHING_TEST_VARIANT",))
    assert other != first and other.exists()
    assert sorted(p.name for p in (tmp_path / "native").iterdir()) == sorted([first.name, other.name])
    monkeypatch.setattr(cxx_compiler, "cpu_description", lambda: "Darwin arm64: Apple M3; features 0")
    on_another_cpu = native_blocks._build(compiler, native_blocks.FLAGS)
    assert on_another_cpu not in (first, other) and on_another_cpu.exists()  # never the other machine's build
