"""The one training loop: it learns, it is deterministic, it stops on divergence."""
import math

import pytest
import torch

from trainables.data import epoch_batches, load_dataset
from trainables.losses import DenoiserNLL, DiscretizedNLL, SmoothedNLL
from trainables.pixelcnnpp import PixelCNNpp
from trainables.training import DivergenceError, TrainUnit, evaluate_nll, train_epoch


def _unit(loss, conditional=False, seed=0, dropout=0.0, **kwargs):
    torch.manual_seed(seed)
    model = PixelCNNpp(1, 16, 1, 3, dropout=dropout, conditional=conditional)
    return TrainUnit.create(model, loss, lr=kwargs.pop("lr", 3e-3), lr_decay=0.9999, **kwargs)


def _run(unit, images, epochs, noise_std=0.0):
    return [train_epoch(unit, epoch_batches(images, 16, noise_std, 0, e), epoch=e, device="cpu")
            for e in range(1, epochs + 1)]


@pytest.mark.slow  # 100 steps each, ~30 CPU-s for the three; the loop's arithmetic is checked fast below
@pytest.mark.parametrize("loss,conditional,noise_std", [
    (DiscretizedNLL(), False, 0.0), (SmoothedNLL(), False, 0.3), (DenoiserNLL(), True, 0.3)])
def test_a_tiny_model_overfits_a_handful_of_digits(loss, conditional, noise_std):
    images = load_dataset("digits", "train")[:16]
    unit = _unit(loss, conditional, lr=1e-2)
    evaluate = lambda: evaluate_nll(unit, epoch_batches(images, 16, noise_std, 0, 0, shuffle=False),
                                    device="cpu").bpd(loss.continuous)
    start = evaluate()
    _run(unit, images, 100, noise_std)  # 100 steps of one batch
    end = evaluate()
    # Smoothed data cannot be memorised below the entropy of its noise, h(x~) >= h(sigma * eps),
    # 0.5 log2(2 pi e sigma^2) + log2(127.5) bits/dim on the 8-bit scale; clean data can reach 0.
    floor = 0.5 * math.log2(2 * math.pi * math.e * noise_std**2) + math.log2(127.5) if loss.continuous else 0.0
    assert end - floor < 0.65 * (start - floor), f"bits/dim {start:.2f} -> {end:.2f} (floor {floor:.2f})"


def test_training_is_deterministic_with_a_seed():
    images = load_dataset("digits", "train")[:32]
    losses = []
    for _ in range(2):
        unit = _unit(DiscretizedNLL(), dropout=0.5)  # dropout draws from the seeded global RNG
        losses.append([s.nll_nats for s in _run(unit, images, 2)])
    losses_a, losses_b = losses
    assert losses_a == losses_b


def test_ema_and_clipping_run_and_ema_lags_the_model():
    images = load_dataset("digits", "train")[:32]
    unit = _unit(DiscretizedNLL(), ema_decay=0.9, grad_clip=1.0)
    _run(unit, images, 1)
    diffs = [(p - q).abs().max().item() for p, q in zip(unit.model.parameters(), unit.eval_model.parameters())]
    assert max(diffs) > 0
    state = unit.state_dict()
    other = _unit(DiscretizedNLL(), ema_decay=0.9, seed=1)
    other.load_state_dict(state)
    for p, q in zip(other.eval_model.parameters(), unit.eval_model.parameters()):
        torch.testing.assert_close(p, q)


def test_ema_is_the_bias_corrected_average_of_the_weights_it_saw():
    """After t steps: sum_k d^(t-k) (1 - d) w_k / (1 - d^t) over the weights after each step;
    the initial weights have no part (a plain EMA keeps d^t of them)."""
    images = load_dataset("digits", "train")[:64]
    decay = 0.8
    unit = _unit(DiscretizedNLL(), ema_decay=decay)
    initial = [p.detach().clone() for p in unit.model.parameters()]
    seen = []  # the weights after every step, (steps, ...) per parameter
    for step, batch in enumerate(epoch_batches(images, 16, 0.0, 0, 1), start=1):
        train_epoch(unit, [batch], epoch=1, device="cpu")
        seen.append([p.detach().clone() for p in unit.model.parameters()])
    t = len(seen)
    assert t == 4
    weights = [decay ** (t - k) * (1 - decay) / (1 - decay**t) for k in range(1, t + 1)]
    assert sum(weights) == pytest.approx(1.0)
    for i, avg in enumerate(unit.eval_model.parameters()):
        expected = sum(w * step_params[i] for w, step_params in zip(weights, seen))
        torch.testing.assert_close(avg, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(avg, initial[i])
    # the first update copies the weights: nothing of the initial ones remains
    first = _unit(DiscretizedNLL(), ema_decay=0.999)
    train_epoch(first, [next(iter(epoch_batches(images, 16, 0.0, 0, 1)))], epoch=1, device="cpu")
    for p, q in zip(first.model.parameters(), first.eval_model.parameters()):
        torch.testing.assert_close(p, q)


def test_a_nan_loss_stops_with_epoch_and_step():
    images = load_dataset("digits", "train")[:48]
    images[20] = float("nan")  # the second batch of 16 (order is shuffled, so find it by content)
    unit = _unit(DiscretizedNLL())
    with pytest.raises(DivergenceError, match=r"epoch 3, step \d"):
        train_epoch(unit, epoch_batches(images, 16, 0.0, 0, 3), epoch=3, device="cpu")


def test_lr_decays_per_step():
    images = load_dataset("digits", "train")[:64]
    unit = _unit(DiscretizedNLL(), lr=1e-3)
    _run(unit, images, 1)  # 4 steps
    assert unit.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9999**4)


def test_bf16_mixed_precision_trains_and_keeps_the_likelihood_in_float32():
    images = load_dataset("digits", "train")[:32]
    full = _unit(DiscretizedNLL())
    mixed = _unit(DiscretizedNLL(), mixed_precision="bf16")
    assert mixed.autocast_dtype == torch.bfloat16 and full.autocast_dtype is None
    assert _unit(DiscretizedNLL(), mixed_precision="auto").autocast_dtype is None  # CPU: auto means off
    a, b = _run(full, images, 1)[0], _run(mixed, images, 1)[0]
    assert math.isfinite(b.nll_nats)
    assert abs(a.bpd(False) - b.bpd(False)) < 0.05 * a.bpd(False)  # bf16 network, same objective
    assert a.nll_nats != b.nll_nats  # autocast really changed the arithmetic
