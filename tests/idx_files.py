"""Writing IDX files (the MNIST format) for tests: real data re-split, or made-up images."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"  # beside the checkout
SHARED_MNIST_MISSING = f"the shared MNIST test split is not at {SHARED_MNIST} (../shared/data/mnist)"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (.ci/run installs it)


def idx_bytes(array: np.ndarray) -> bytes:
    """Header (magic 0x0000 0x08 ndim, then big-endian uint32 sizes) + the uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as IDX, gzip-compressed where the name ends in .gz."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)
    return path


def write_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, suffix: str = ".gz") -> None:
    """`prefix` is "train" or "t10k": images (N, 28, 28) and labels (N,) in MNIST's file names."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def mnist_halves(folder: Path, seed: int = 0) -> Path:
    """The shared MNIST test split (10k) as a dataset folder: a seeded half as the training
    split, the other half as the test split (uint8 images as they are in the files)."""
    from trainables.data import read_idx

    images = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")  # (10000, 28, 28)
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")  # (10000,)
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2
    write_split(folder, "train", images[order[:half]], labels[order[:half]])
    write_split(folder, "t10k", images[order[half:]], labels[order[half:]])
    return folder
