"""Datasets load in [-1, 1] on the 8-bit grid; noise and batch order are seeded per epoch."""
import gzip
import hashlib
from pathlib import Path

import numpy as np

import pytest
import torch

from tests.idx_files import SHARED_MNIST, idx_bytes, write_idx, write_split
from tests.required import skip_unless_required
from trainables.data import DataFileError, add_noise, epoch_batches, epoch_generator, load_dataset, subset_indices

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


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


def test_mnist_test_split_from_idx_files():
    if not SHARED_MNIST.exists():
        skip_unless_required("shared-mnist", "the shared MNIST test split is not beside the checkout")
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


def test_failed_download_keeps_the_hint_on_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):  # torchvision's own message spans lines
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a, got:\n<urlopen error>")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and message.index("Put these files in place") < message.index("urlopen error")
    for name in ("t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]", f"--data-dir {tmp_path}"):
        assert name in message


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


# --- real files, clear errors ---------------------------------------------------------------

def _good_split(folder: Path, n: int = 6, suffix: str = ".gz"):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    write_split(folder, "t10k", images, labels, suffix)
    return images, labels


def _break(folder: Path, case: str) -> Path:
    """Damage the test split's image file (or labels) in one of the ways real downloads break."""
    path = folder / "t10k-images-idx3-ubyte.gz"
    good = idx_bytes(np.zeros((6, 28, 28), np.uint8))
    if case == "one byte":
        path.write_bytes(gzip.compress(b"\x00"))
    elif case == "not gzip":
        path.write_bytes(good)  # plain IDX under a .gz name
    elif case == "truncated gzip":
        packed = gzip.compress(good)
        path.write_bytes(packed[: len(packed) // 2])
    elif case == "truncated header":
        path.write_bytes(gzip.compress(good[:10]))
    elif case == "wrong magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + good[4:]))  # float IDX type code
    elif case == "html page":
        path.write_bytes(gzip.compress(b"<html><body>rate limited</body></html>"))
    elif case == "short data":
        path.write_bytes(gzip.compress(good[:-5]))
    elif case == "count mismatch":
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
        return folder / "t10k-labels-idx1-ubyte.gz"
    return path


@pytest.mark.parametrize("case, says", [
    ("one byte", "too short for the 4-byte IDX magic number"),
    ("not gzip", "named .gz but is not gzip-compressed"),
    ("truncated gzip", "gzip stream is cut short"),
    ("truncated header", "header cut short (10 of 16 bytes"),
    ("wrong magic", "IDX type code 0x0d"),
    ("html page", "is not an IDX file's"),
    ("short data", "cut short: header says 6x28x28 = 4704 bytes of data, the file holds 4699"),
    ("count mismatch", "holds 6 images but"),
])
def test_damaged_idx_files_end_in_one_line_naming_the_file(tmp_path, case, says):
    _good_split(tmp_path)
    broken = _break(tmp_path, case)
    with pytest.raises(DataFileError) as err:
        load_dataset("mnist", "test", data_dir=str(tmp_path))
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert str(broken) in message and says in message, message


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_debian_layout_four_idx_files_in_the_data_dir(tmp_path, suffix):
    images, labels = _good_split(tmp_path, suffix=suffix)  # Debian's names, no torchvision raw/ folder
    x, y = load_dataset("fashion_mnist", "test", data_dir=str(tmp_path), with_labels=True)
    assert torch.equal(((x[:, 0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.slow  # decodes all 70,000 images (~2.5 CPU-s); the IDX reading runs fast above
def test_debian_fashion_mnist_package_reads_as_it_is():
    if not DEBIAN_FASHION_MNIST.exists():
        skip_unless_required("fashion-mnist", f"Debian's dataset-fashion-mnist is not installed "
                             f"({DEBIAN_FASHION_MNIST} absent)")
    test_x, test_y = load_dataset("fashion_mnist", "test", data_dir=str(DEBIAN_FASHION_MNIST), with_labels=True)
    train_x = load_dataset("fashion_mnist", "train", data_dir=str(DEBIAN_FASHION_MNIST))
    assert test_x.shape == (10000, 1, 28, 28) and train_x.shape == (60000, 1, 28, 28)
    assert torch.bincount(test_y).tolist() == [1000] * 10 and _on_8bit_grid(test_x)


def test_subsets_are_one_fixed_choice_whatever_the_trial_seed():
    full = load_dataset("digits", "train")
    part = load_dataset("digits", "train", subset=100)
    chosen = subset_indices(len(full), 100)
    assert len(set(chosen.tolist())) == 100 and np.all(np.diff(chosen) > 0)
    torch.testing.assert_close(part, full[torch.from_numpy(chosen)])
    torch.testing.assert_close(load_dataset("digits", "train", subset=100), part)  # no RNG state involved
    assert len(load_dataset("digits", "train", subset=10**6)) == len(full)
    assert subset_indices(5, 0).tolist() == [0, 1, 2, 3, 4]
