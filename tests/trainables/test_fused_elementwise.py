"""The fused element-wise kernels of the training step compute what the plain torch operations
compute: kernels against torch's formulas, a gated resnet with dropout, and 50 training steps
(losses and weights)."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from trainables import fused_elementwise as fe
from trainables import layers
from trainables.data import epoch_batches, load_dataset
from trainables.layers import DownRightShiftedConv2d, DownShiftedConv2d, GatedResnet
from trainables.losses import SmoothedNLL
from trainables.pixelcnnpp import PixelCNNpp
from trainables.training import TrainUnit, train_epoch

PADS = [(1, 1, 1, 0), (1, 0, 1, 0), (0, 0, 0, 0)]  # down-shifted, down-right-shifted convs, a NIN's input


@pytest.fixture(autouse=True)
def defaults_after():
    yield
    fe.set_enabled(True)


def speedups(on: bool, compiled: bool = False) -> None:
    """The fused path on (its kernels uncompiled unless `compiled`) or off."""
    fe.set_enabled(on, compiled=compiled)


def _with_zeros(*shape) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float32) * 3
    x.view(-1)[::7] = 0.0  # elu's kink: torch's derivative there is 1 (x <= 0 branch, exp(0))
    return x.requires_grad_()


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("with_add", [False, True])
def test_concat_elu_pad_equals_torch(pad, with_add):
    speedups(True)
    x, add = _with_zeros(3, 5, 6, 4), (_with_zeros(3, 5, 6, 4) if with_add else None)
    s = x + add if with_add else x
    expected = F.pad(F.elu(torch.cat([s, -s], dim=1)), pad)
    out = fe.concat_elu_pad(x, pad, add=add)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # one expm1 per value: the same floats
    grad = torch.randn_like(expected)
    inputs = (x, add) if with_add else (x,)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # exp(v) against expm1(v) + 1


@pytest.mark.parametrize("with_cond", [False, True])
def test_gate_equals_torch(with_cond):
    speedups(True)
    x, h = _with_zeros(2, 4, 5, 5), _with_zeros(2, 8, 5, 5)
    cond = _with_zeros(2, 8, 5, 5) if with_cond else None
    total = h + cond if with_cond else h
    value, gate = total.chunk(2, dim=1)
    expected = x + value * torch.sigmoid(gate)
    out = fe.gate(x, h, cond)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(expected)
    inputs = (x, h, cond) if with_cond else (x, h)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv,skip_streams", [(DownShiftedConv2d, 1), (DownRightShiftedConv2d, 2)])
def test_fused_gated_resnet_equals_plain_with_dropout_skip_and_cond(monkeypatch, conv, skip_streams):
    """Channel-wise dropout of the padded activations draws the same (N, 2F, 1, 1) mask."""
    monkeypatch.setattr(fe, "MIN_NUMEL", 0)
    torch.manual_seed(0)
    block = GatedResnet(4, conv, skip_streams=skip_streams, dropout=0.5, cond_channels=4)
    x, a, cond = torch.randn(3, 4, 8, 8), torch.randn(3, 4 * skip_streams, 8, 8), torch.randn(3, 4, 8, 8)
    results = []
    for on in (False, True):
        speedups(on)
        torch.manual_seed(1)
        out = block(x, a, cond)
        grads = torch.autograd.grad(out.square().sum(), list(block.parameters()))
        results.append((out, grads))
    (plain, plain_grads), (fast, fast_grads) = results
    assert plain.is_contiguous() and fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _fifty_steps(on: bool, compiled: bool = False):
    """Step losses and final weights of 50 Adam steps of a small smoothed model on digits, dropout off."""
    speedups(on, compiled)
    images = load_dataset("digits", "train")[:160]
    torch.manual_seed(0)
    unit = TrainUnit.create(PixelCNNpp(1, 8, 1, 3), SmoothedNLL(), lr=2e-3, lr_decay=0.999995)
    losses = []
    for epoch in range(1, 6):  # 10 batches of 16 per epoch
        losses += train_epoch(unit, epoch_batches(images, 16, 0.3, 0, epoch), epoch=epoch, device="cpu").step_losses
    return torch.tensor(losses), {k: v.clone() for k, v in unit.model.state_dict().items()}


def _assert_same_training(fast, plain) -> None:
    assert len(fast[0]) == 50
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-4, atol=0)
    assert fast[1].keys() == plain[1].keys()
    for key in plain[1]:
        torch.testing.assert_close(fast[1][key], plain[1][key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow  # 100 training steps (~8 CPU-s); the kernels and a fused gated resnet are checked fast above
def test_fifty_training_steps_match_the_plain_step(monkeypatch):
    monkeypatch.setattr(fe, "MIN_NUMEL", 0)  # every gated resnet and concat_elu takes the fused path
    _assert_same_training(_fifty_steps(True), _fifty_steps(False))


@pytest.mark.slow
def test_fifty_training_steps_match_with_compiled_kernels(monkeypatch):
    """The same with the kernels torch.compile'd (a cold inductor cache compiles for minutes)."""
    monkeypatch.delenv(fe.ENV_VAR, raising=False)  # whatever the caller's environment says
    for key, value in (("checked", False), ("reason", "")):
        monkeypatch.setitem(fe._state, key, value)
    monkeypatch.setattr(fe, "MIN_NUMEL", 0)
    fast = _fifty_steps(True, compiled=True)
    assert fe.available() and fe._state["reason"] == "", fe._state["reason"]
    assert len(fe._compiled) >= 6  # concat_elu_pad forward and backward per padding, the gate's two
    _assert_same_training(fast, _fifty_steps(False))


def test_without_a_compiler_torch_operations_run_and_one_warning_says_why(monkeypatch):
    monkeypatch.delenv(fe.ENV_VAR, raising=False)  # tests/conftest.py sets it to 0 outside slow tests
    for key, value in (("checked", False), ("reason", ""), ("warned", False)):
        monkeypatch.setitem(fe._state, key, value)
    monkeypatch.setattr(fe, "_cxx_compiler", lambda: None)
    monkeypatch.setattr(fe, "MIN_NUMEL", 0)
    speedups(True, compiled=True)
    x = torch.randn(2, 3, 4, 4)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as caught:
        assert not fe.applies(x)
        out = layers.concat_elu(x)
    assert len(caught) == 1
    torch.testing.assert_close(out, F.elu(torch.cat([x, -x], dim=1)), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert not fe.applies(x)


def test_kernels_are_compiled_per_thread_count(monkeypatch):
    """Inductor generates CPU kernels for the thread count at compile time: each count its own
    (torch.compile is lazy, nothing compiles here)."""
    monkeypatch.setattr(fe, "_compiled", {})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fe._kernel(fe._gate_bwd)
        torch.set_num_threads(2)
        two = fe._kernel(fe._gate_bwd)
        assert fe._kernel(fe._gate_bwd) is two
    finally:
        torch.set_num_threads(before)
    assert one is not two and len(fe._compiled) == 2
