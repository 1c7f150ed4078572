"""The fast sampler on the stacked denoiser (x~ above x, 2H x W): same uniforms -> the naive sampler's pixels.

The top H rows are given (x~): the fast sampler computes their activations a row at a time
(sampling/given_rows.py) and draws the bottom rows pixel by pixel. Checked as for the other
kinds (test_fast_sampling.py): in float64 against the naive sampler itself at 8x8 and 12x12 (a
lowest level of odd width 3), and against its one-pass fixed point at 28x28 and 32x32 RGB with
continuous draws, where any wrong parameter moves the sample; the given rows must reach the
drawn ones (a change of x~ in its last pixel changes the first drawn pixel); the pixel steps
pass the CUDA-graph audit and the native steps draw what the torch steps draw.
"""
import pytest
import torch

from tests.required import skip_unless_required
from tests.trainables.test_fast_sampling import _default_dtype, _inputs, _naive, _redraw, one_thread  # noqa: F401
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling import native_blocks
from trainables.sampling.fast import fast_sample
from trainables.sampling.naive import sample


def _model(channels, nr_resnet=1, filters=8, mixtures=3, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = PixelCNNpp(channels, filters, nr_resnet, mixtures, conditional=True, conditioning="stacked").to(dtype)
    with torch.no_grad():  # random biases, so that no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("channels,nr_resnet,side,discretized",  # 12x12 (~2.3 CPU-s of naive passes) is slow
                         [(1, 1, 8, True), (3, 2, 8, True), (3, 1, 8, False),
                          pytest.param(1, 1, 12, True, marks=pytest.mark.slow)])
def test_fast_equals_naive(channels, nr_resnet, side, discretized):
    model = _model(channels, nr_resnet, filters=4)
    shape, n = (channels, side, side), 2
    uniforms, x_noisy = _inputs(model, n, shape)
    naive = _naive(model, n, shape, discretized, uniforms, x_noisy)
    fast = fast_sample(model, n, shape, discretized=discretized, x_noisy=x_noisy, uniforms=uniforms)
    assert fast.shape == (n, *shape) and torch.isfinite(fast).all()
    assert (fast - naive).abs().max() < 1e-10, "float64 leaves no room for more than rounding"


def test_same_generator_same_pixels_as_naive():
    """A fixed x~ and the same generator seed, at a temperature below 1: the same 8-bit image."""
    model = _model(3)
    shape, n = (3, 8, 8), 3
    x_noisy = torch.linspace(-1.5, 1.5, n * 3 * 64, dtype=torch.float64).reshape(n, *shape)
    with _default_dtype(torch.float64):
        naive = sample(model, n, shape, discretized=True, x_noisy=x_noisy,
                       generator=torch.Generator().manual_seed(7), temperature=0.8)
        fast = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy,
                           generator=torch.Generator().manual_seed(7), temperature=0.8)
    assert torch.equal(fast, naive)


@pytest.mark.parametrize("channels,side", [(1, 28), pytest.param(3, 32, marks=pytest.mark.slow)])  # 32x32 RGB: slow
def test_fast_sample_is_the_naive_fixed_point_and_follows_x_noisy(channels, side):
    """Continuous draws at 28x28 (levels 28, 14, 7) and 32x32 RGB: one full pass on the sample redraws
    it; an x~ that differs only in its last row (right above x) changes the first drawn pixel."""
    model = _model(channels, filters=4, mixtures=2)
    shape, n = (channels, side, side), 1
    uniforms, x_noisy = _inputs(model, n, shape)
    other = x_noisy.clone()
    other[:, :, -1] += 3.0
    samples = []
    for noisy in (x_noisy, other):
        fast = fast_sample(model, n, shape, discretized=False, x_noisy=noisy, uniforms=uniforms)
        with torch.no_grad():
            assert (fast - _redraw(model, fast, uniforms, False, noisy)).abs().max() < 1e-10
        samples.append(fast)
    assert (samples[0][:, :, 0, 0] - samples[1][:, :, 0, 0]).abs().min() > 1e-8


def test_the_pixel_steps_pass_the_graph_audit():
    """The drawn rows' steps can be replayed as CUDA graphs (pixel_steps.py), after the given rows."""
    model = _model(1, filters=4, mixtures=2)
    shape, n = (1, 8, 8), 2  # levels 8, 4, 2 below 8 given rows
    uniforms, x_noisy = _inputs(model, n, shape)
    audited = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms, audit_steps=True)
    eager = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms)
    assert torch.equal(audited, eager)


@pytest.mark.slow  # the MNIST-sized model at 28x28 (~2.5 CPU-s); test_native_blocks.py runs smaller ones fast
def test_native_steps_draw_what_the_torch_steps_draw():
    """float32, 28x28, the MNIST configuration's 40 filters at depth 2: the compiled steps (and the
    given rows' skip shares by the compiled matmul) against torch operations, to float32 rounding."""
    if native_blocks.load() is None:
        skip_unless_required("native-blocks", f"no native steps: {native_blocks.unavailable_reason()}")
    model = _model(1, nr_resnet=2, filters=40, dtype=torch.float32)
    shape, n = (1, 28, 28), 2
    uniforms, x_noisy = _inputs(model, n, shape, dtype=torch.float32)
    native = fast_sample(model, n, shape, discretized=False, x_noisy=x_noisy, uniforms=uniforms, native=True)
    eager = fast_sample(model, n, shape, discretized=False, x_noisy=x_noisy, uniforms=uniforms, native=False)
    assert torch.isfinite(native).all() and (native - eager).abs().max() < 1e-4


@pytest.mark.slow  # the meta device dispatches slowly (~3 CPU-s); test_fast_sampling.py runs the check fast
def test_every_tensor_stays_on_the_models_device():
    """On the meta device a CPU tensor made along the way (in the given rows too) fails an element-wise op."""
    model = _model(3, filters=4, mixtures=2, dtype=torch.float32)
    uniforms, x_noisy = _inputs(model, 2, (3, 8, 8), dtype=torch.float32)
    model, uniforms = model.to("meta"), tuple(u.to("meta") for u in uniforms)
    out = fast_sample(model, 2, (3, 8, 8), discretized=True, x_noisy=x_noisy.to("meta"), uniforms=uniforms)
    assert out.device.type == "meta" and out.shape == (2, 3, 8, 8)
