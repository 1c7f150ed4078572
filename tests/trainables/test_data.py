"""Datasets load in [-1, 1] on the 8-bit grid; noise and batch order are seeded per epoch."""
import hashlib
from pathlib import Path

import pytest
import torch

from trainables.data import add_noise, epoch_batches, epoch_generator, load_dataset

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def _on_8bit_grid(x):
    levels = (x + 1) * 127.5
    return torch.allclose(levels, levels.round(), atol=1e-4)


def test_digits_splits_are_disjoint_deterministic_and_scaled():
    train, train_labels = load_dataset("digits", "train", with_labels=True)
    test = load_dataset("digits", "test")
    assert train.shape == (1438, 1, 8, 8) and test.shape == (359, 1, 8, 8)
    assert train.min() == -1 and train.max() == 1 and _on_8bit_grid(train)
    assert set(train_labels.tolist()) == set(range(10))
    train_rows = {tuple(r.tolist()) for r in train.flatten(1)}
    overlap = sum(tuple(r.tolist()) in train_rows for r in test.flatten(1))
    assert overlap < 0.05 * len(test)  # sklearn's digits hold a few exact duplicates, no more
    torch.testing.assert_close(load_dataset("digits", "test"), test)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="the shared MNIST test split is not beside the checkout")
def test_mnist_test_split_from_idx_files():
    sums = dict(line.split()[::-1] for line in (SHARED_MNIST / "SHA256SUMS").read_text().splitlines() if line)
    for name, digest in sums.items():
        assert hashlib.sha256((SHARED_MNIST / name.lstrip("*")).read_bytes()).hexdigest() == digest
    x, y = load_dataset("mnist", "test", data_dir=str(SHARED_MNIST), with_labels=True)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert x.min() == -1 and x.max() == 1 and _on_8bit_grid(x)
    assert torch.bincount(y).min() > 800


def test_missing_files_error_names_them(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_network(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(tvd, "MNIST", no_network)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", "train", data_dir=str(tmp_path))


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")


def test_noise_is_fresh_per_epoch_and_reproducible():
    x = torch.zeros(512, 1, 8, 8)
    first = [b for b in epoch_batches(x, 128, 0.5, seed=3, epoch=1)]
    again = [b for b in epoch_batches(x, 128, 0.5, seed=3, epoch=1)]
    other = [b for b in epoch_batches(x, 128, 0.5, seed=3, epoch=2)]
    torch.testing.assert_close(first[0][1], again[0][1])
    assert not torch.allclose(first[0][1], other[0][1])
    noise = torch.cat([b[1] for b in first])
    assert abs(noise.std().item() - 0.5) < 0.01 and abs(noise.mean().item()) < 0.01


def test_zero_noise_is_the_clean_data_and_order_is_a_permutation():
    x = torch.arange(10.0).view(10, 1, 1, 1)
    batches = list(epoch_batches(x, 4, 0.0, seed=0, epoch=1))
    assert all(torch.equal(clean, noisy) for clean, noisy in batches)
    assert sorted(torch.cat([b[0] for b in batches]).flatten().tolist()) == list(range(10))
    noisy = add_noise(torch.zeros(1000), 0.3, epoch_generator(0, 0))
    assert 0.27 < noisy.std().item() < 0.33
