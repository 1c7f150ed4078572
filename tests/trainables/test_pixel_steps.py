"""The fast sampler's pixel steps can be replayed as CUDA graphs: audited and replayed on any device.

The audit (pixel_steps.PixelSteps, audit=True) records the memory every operation of a step
touches; a step that a graph could not replay faithfully raises StepAuditError. RecordedGraph
replays a step as a CUDA graph does, its recorded operations on the same tensors without the
Python that issued them. The tests show that the sampler's steps pass the audit and replay to
the eager samples bit for bit where every level and the denoiser's conditioning run, that each
way of breaking a replay is caught, and (on a CUDA device only) that real CUDA graphs agree.
"""
import pytest
import torch

from tests.required import skip_unless_required
from tests.trainables.test_fast_sampling import _inputs, _model, one_thread  # noqa: F401 (an autouse fixture)
from trainables.sampling import fast, pixel_draw
from trainables.sampling.fast import fast_sample
from trainables.sampling.pixel_steps import PixelSteps, StepAuditError


def _audit(model, shape, n=2, **kwargs):
    uniforms, x_noisy = _inputs(model, n, shape)
    return fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms, audit_steps=True,
                       **kwargs)


@pytest.mark.slow  # the audit at every pixel of 28x28 and 32x32: ~18 CPU-s; at 8x8 it runs fast (test_fast_stacked.py)
@pytest.mark.parametrize("channels,conditional,side", [(1, False, 28), (3, True, 32)])
def test_every_pixel_step_is_a_replay_of_the_first_of_its_key(channels, conditional, side, monkeypatch):
    """Levels 28/14/7 (odd width at the lowest) and 32/16/8 with the denoiser's conditioning rows.
    The audited samples are the eager ones, and far fewer steps than pixels need a graph."""
    keys = []
    real_init = PixelSteps.__init__
    monkeypatch.setattr(PixelSteps, "__init__", lambda self, *a, **k: (keys.append(self), real_init(self, *a, **k))[1])
    model = _model(channels, conditional, filters=4, mixtures=2)
    shape = (channels, side, side)
    audited = _audit(model, shape)
    uniforms, x_noisy = _inputs(model, 2, shape)
    eager = fast_sample(model, 2, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms)
    assert torch.equal(audited, eager)
    graphs = len(keys[0].first_runs)
    assert side * 4 <= graphs <= side * 10, graphs  # 4 row patterns per column, more while the bands fill
    assert graphs < side * side / 2


def test_the_audit_catches_a_step_that_reads_the_rows_noise_in_place(monkeypatch):
    """Reading gumbel[i, j] directly: a different place at every row, which a graph captured at the
    first row of its key would never read."""
    real_call = pixel_draw.PixelDraw.__call__

    def in_place(self, params, i, j):
        self.gumbel_cols = self.gumbel[i].unbind(0)
        return real_call(self, params, i, j)

    monkeypatch.setattr(pixel_draw.PixelDraw, "__call__", in_place)
    with pytest.raises(StepAuditError, match="is not a replay of step"):
        _audit(_model(1, False), (1, 8, 8))


def test_the_audit_catches_a_step_that_reads_a_tensor_made_for_its_row(monkeypatch):
    """A per-row term made afresh at each row (not written into a buffer made once)."""
    real_u_row = fast._CachedTrunk.u_row

    def fresh_terms(self, i):
        real_u_row(self, i)
        self.ul_init_up_cols = self.ul_init_up_row.clone().unbind(1)

    monkeypatch.setattr(fast._CachedTrunk, "u_row", fresh_terms)
    with pytest.raises(StepAuditError, match=r"pixel step \(0, 0\) .* that the start of row 0 made"):
        _audit(_model(1, False), (1, 8, 8))


def test_the_audit_catches_a_step_that_keeps_a_tensor_for_a_later_step(monkeypatch):
    real_ul_pixel = fast._CachedTrunk.ul_pixel

    def keeps(self, i, j):
        params = real_ul_pixel(self, i, j)
        kept = getattr(self, "kept", None)
        self.kept = params * 1.0
        return params if kept is None else params + 0.0 * kept

    monkeypatch.setattr(fast._CachedTrunk, "ul_pixel", keeps)
    with pytest.raises(StepAuditError, match=r"pixel step \(0, 0\) .* that the warm-up run of pixel step \(0, 0\) made"):
        _audit(_model(1, False), (1, 8, 8))


def test_the_audit_catches_a_host_sync_in_a_step(monkeypatch):
    real_draw = pixel_draw.PixelDraw.__call__
    monkeypatch.setattr(pixel_draw.PixelDraw, "__call__",
                        lambda self, params, i, j: real_draw(self, params, i, j) * float(params.abs().max() >= 0))
    with pytest.raises(StepAuditError, match="host sync"):
        _audit(_model(1, False), (1, 8, 8))


def test_a_band_cannot_slide_inside_a_step(monkeypatch):
    """A row whose bands were not started before its steps fails loudly (a graph replay would
    skip the slide, which is Python), in every mode."""
    monkeypatch.setattr(fast._CachedTrunk, "start_row", lambda self, i: None)
    model = _model(1, False)
    uniforms, _ = _inputs(model, 1, (1, 8, 8))
    with pytest.raises(RuntimeError, match="would slide the band inside a pixel step"):
        fast_sample(model, 1, (1, 8, 8), discretized=True, uniforms=uniforms)


def test_cuda_graphs_fall_back_to_the_eager_steps_on_a_cpu():
    model = _model(1, False)
    uniforms, _ = _inputs(model, 2, (1, 8, 8))
    graphs = fast_sample(model, 2, (1, 8, 8), discretized=True, uniforms=uniforms, cuda_graphs=True)
    assert torch.equal(graphs, fast_sample(model, 2, (1, 8, 8), discretized=True, uniforms=uniforms))


@pytest.mark.parametrize("channels,conditional,side", [(1, False, 28), (3, True, 32)])
def test_cuda_graph_steps_draw_the_eager_samples(channels, conditional, side):
    if not torch.cuda.is_available():
        skip_unless_required("cuda", "CUDA graphs need a CUDA device")
    model = _model(channels, conditional, filters=8, mixtures=3, dtype=torch.float32)
    shape, n = (channels, side, side), 4
    uniforms, x_noisy = _inputs(model, n, shape, dtype=torch.float32, seed=3)
    model, uniforms = model.cuda(), tuple(u.cuda() for u in uniforms)
    x_noisy = x_noisy.cuda() if conditional else None
    eager = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms)
    graphs = fast_sample(model, n, shape, discretized=True, x_noisy=x_noisy, uniforms=uniforms, cuda_graphs=True)
    assert torch.equal(graphs, eager)


@pytest.fixture
def recorded_graphs(monkeypatch):
    """cuda_graphs=True on the CPU replays RecordedGraph: the recorded operations, without the Python."""
    monkeypatch.setattr(PixelSteps, "recorded_graphs", True)


@pytest.mark.parametrize("channels,conditional,side,discretized",  # the RGB denoiser's 32x32 is slow (~3.5 CPU-s)
                         [(1, False, 28, False), pytest.param(3, True, 32, True, marks=pytest.mark.slow)])
def test_steps_replayed_without_their_python_draw_the_eager_samples(recorded_graphs, channels, conditional, side,
                                                                    discretized):
    """The smoothed model's continuous draw at 28x28 and the RGB denoiser at 32x32, bit for bit."""
    model = _model(channels, conditional, filters=4, mixtures=2)
    shape = (channels, side, side)
    uniforms, x_noisy = _inputs(model, 2, shape)
    common = dict(discretized=discretized, x_noisy=x_noisy, uniforms=uniforms)
    replayed = fast_sample(model, 2, shape, cuda_graphs=True, **common)
    assert torch.equal(replayed, fast_sample(model, 2, shape, **common))


def test_a_replay_of_a_step_that_reads_the_rows_noise_in_place_draws_other_samples(recorded_graphs, monkeypatch):
    """What the audit catches matters: replayed, such a step draws with the first row's noise."""
    real_call = pixel_draw.PixelDraw.__call__

    def in_place(self, params, i, j):
        self.gumbel_cols, self.logit_u_cols = self.gumbel[i].unbind(0), self.logit_u[i].unbind(0)
        return real_call(self, params, i, j)

    model = _model(1, False)
    uniforms, _ = _inputs(model, 2, (1, 8, 8))
    eager = fast_sample(model, 2, (1, 8, 8), discretized=False, uniforms=uniforms)
    monkeypatch.setattr(pixel_draw.PixelDraw, "__call__", in_place)
    assert torch.equal(fast_sample(model, 2, (1, 8, 8), discretized=False, uniforms=uniforms), eager)  # eagerly right
    replayed = fast_sample(model, 2, (1, 8, 8), discretized=False, uniforms=uniforms, cuda_graphs=True)
    assert not torch.equal(replayed[:, :, 4:], eager[:, :, 4:])  # rows 4.. replay the graphs of rows 0..3
    assert torch.equal(replayed[:, :, :1], eager[:, :, :1])
