"""Datasets scaled to [-1, 1], the smoothing noise, and seeded epoch batches.

Images are float32 tensors of shape (N, C, H, W) on the 8-bit grid mapped to
[-1, 1]: x = v / 127.5 - 1 for integer v in 0..255, so the 256-bin discretized
likelihood and 8-bit bits/dim apply to every dataset (digits' 17 grey levels are
rescaled to the 8-bit grid first).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from trainables.cache_files import DEFAULT_DATA_DIR

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

# IDX file names per dataset and split (torchvision's MNIST layout uses the same names).
_IDX_FILES = {
    ("mnist", "train"): ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("mnist", "test"): ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_FILES[("fashion_mnist", "train")] = _IDX_FILES[("mnist", "train")]
_IDX_FILES[("fashion_mnist", "test")] = _IDX_FILES[("mnist", "test")]
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def load_dataset(name: str, split: str, data_dir: Optional[str] = None, with_labels: bool = False):
    """Images (N, C, H, W) float32 in [-1, 1]; with `with_labels`, also int64 labels (N,).

    name: digits | mnist | fashion_mnist | cifar10; split: train | test.
    digits ships with scikit-learn (offline; fixed seeded 80/20 split). The others
    come through torchvision: files already in `data_dir` are used, otherwise a
    download is tried; where neither works the error names the files expected.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        images, labels = _digits(split)
    elif name in ("mnist", "fashion_mnist"):
        images, labels = _idx_dataset(name, split, data_dir)
    elif name == "cifar10":
        images, labels = _cifar10(split, data_dir)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(IMAGE_SHAPES)}")
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return (x, y) if with_labels else x


def _digits(split: str):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    levels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8) on the 8-bit grid
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(levels))
    n_test = int(round(len(levels) * DIGITS_TEST_FRACTION))
    idx = order[:n_test] if split == "test" else order[n_test:]
    idx = np.sort(idx)
    return levels[idx][:, None], bunch.target[idx]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): unsigned-byte arrays as used by MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def data_root(data_dir: Optional[str]) -> Path:
    """Where the torchvision datasets live: `data_dir`, else DEFAULT_DATA_DIR."""
    return Path(data_dir or os.path.expanduser(DEFAULT_DATA_DIR))


def _idx_dataset(name: str, split: str, data_dir: Optional[str]):
    root = data_root(data_dir)
    image_stem, label_stem = _IDX_FILES[(name, split)]
    folders = [root, root / _TORCHVISION_FOLDER[name] / "raw"]
    for folder in folders:
        images, labels = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
        if images and labels:
            return read_idx(images)[:, None], read_idx(labels)
    _download_torchvision(name, root, split, expected=[f"{folders[0]}/{s}[.gz]" for s in (image_stem, label_stem)])
    return _idx_dataset(name, split, str(root))


def _download_torchvision(name: str, root: Path, split: str, expected: list[str]) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        cls(str(root), train=(split == "train"), download=True)
    except Exception as err:  # no network, checksum failure, unwritable root
        raise FileNotFoundError(
            f"{name} {split} split not found and could not be downloaded ({type(err).__name__}: {err}). "
            f"Put these files in place and pass --data-dir {root}: {', '.join(expected)}"
        ) from err


def _cifar10(split: str, data_dir: Optional[str]):
    import torchvision.datasets as tvd

    root = data_root(data_dir)
    try:
        ds = tvd.CIFAR10(str(root), train=(split == "train"), download=False)
    except RuntimeError:
        _download_torchvision("cifar10", root, split, expected=[f"{root}/cifar-10-batches-py/ (from cifar-10-python.tar.gz)"])
        ds = tvd.CIFAR10(str(root), train=(split == "train"), download=False)
    return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets)


def add_noise(x: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """x~ = x + sigma * eps, eps ~ N(0, I); no clamping (smoothed data has unbounded support)."""
    if noise_std == 0:
        return x
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + noise_std * eps


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream): resuming at an epoch reproduces it."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 7919 + stream) % (2**63 - 1))


def epoch_batches(
    images: torch.Tensor, batch_size: int, noise_std: float, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, x_noisy) batches of one epoch: a fresh seeded order and fresh noise per epoch.

    The noise is drawn on the CPU from a generator of (seed, epoch), so the batches are
    identical whatever device trains on them and whether or not training was resumed.
    """
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(len(images), generator=gen) if shuffle else torch.arange(len(images))
    for start in range(0, len(images), batch_size):
        x = images[order[start: start + batch_size]]  # (B, C, H, W)
        yield x, add_noise(x, noise_std, gen)
