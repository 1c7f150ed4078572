"""Datasets scaled to [-1, 1], the smoothing noise, and seeded epoch batches.

Images are float32 tensors of shape (N, C, H, W) on the 8-bit grid mapped to
[-1, 1]: x = v / 127.5 - 1 for integer v in 0..255, so the 256-bin discretized
likelihood and 8-bit bits/dim apply to every dataset (digits' 17 grey levels are
rescaled to the 8-bit grid first).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from trainables import image_files
from trainables.cache_files import DEFAULT_DATA_DIR
from trainables.idx import DataFileError, read_idx, read_idx_pair

__all__ = ["DataFileError", "read_idx", "load_dataset", "image_shape", "subset_indices"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
SUBSET_SEED = 0  # which n images a capped split uses: the same for every trial and process

# IDX file names per split, in torchvision's raw/ folder and in Debian's dataset-*-mnist packages
# (e.g. /usr/share/datasets/fashion-mnist holds exactly these four, gzip-compressed).
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

# celeba and folder: 3 x S x S for the configured image_size S (these are the defaults, S = 32).
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "celeba": (3, 32, 32), "folder": (3, 32, 32)}
RESIZABLE = ("celeba", "folder")  # datasets whose image size is chosen by image_size


def image_shape(name: str, image_size: int = 0) -> tuple[int, int, int]:
    """(C, H, W) of a dataset; image_size (0: the default) applies to celeba and folder only."""
    if name not in IMAGE_SHAPES:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(IMAGE_SHAPES)}")
    if name in RESIZABLE and image_size:
        return (3, image_size, image_size)
    return IMAGE_SHAPES[name]


def subset_indices(total: int, n: int) -> np.ndarray:
    """All indices when n <= 0 or n >= total, else a fixed seeded sample of n of them (sorted)."""
    if n <= 0 or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(total)[:n])


def load_dataset(name: str, split: str, data_dir: Optional[str] = None, with_labels: bool = False, *,
                 image_size: int = 0, subset: int = 0):
    """Images (N, C, H, W) float32 in [-1, 1]; with `with_labels`, also int64 labels (N,).

    name: digits | mnist | fashion_mnist | cifar10 | celeba | folder; split: train | test.
    digits ships with scikit-learn (offline; fixed seeded 80/20 split). mnist, fashion_mnist
    and cifar10 come through torchvision: files already in `data_dir` are used (torchvision's
    layout, or the four IDX files directly in it as Debian's packages install them), otherwise
    a download is tried; where neither works the error names the files expected. celeba and
    folder are image files resized to image_size (image_files.py); they have no labels (-1).
    subset: n images of the split chosen by a fixed seed (0: all); file datasets decode only those.
    A damaged file raises DataFileError (a ValueError) naming it.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name in RESIZABLE:
        images, labels = _image_file_dataset(name, split, data_dir, image_shape(name, image_size)[1], subset)
    else:
        if name == "digits":
            images, labels = _digits(split)
        elif name in ("mnist", "fashion_mnist"):
            images, labels = _idx_dataset(name, split, data_dir)
        elif name == "cifar10":
            images, labels = _cifar10(split, data_dir)
        else:
            raise ValueError(f"unknown dataset {name!r}; valid: {sorted(IMAGE_SHAPES)}")
        keep = subset_indices(len(images), subset)
        images, labels = images[keep], labels[keep]
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return (x, y) if with_labels else x


@functools.lru_cache(maxsize=None)
def _digits_levels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits on the 8-bit grid, (1797, 8, 8) uint8 and labels, read-only: parsed from
    its CSV once per process (25 ms a call; a trial and the tests load the split many times)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    levels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    target = np.asarray(bunch.target)
    for array in (levels, target):
        array.setflags(write=False)
    return levels, target


def _digits(split: str):
    levels, target = _digits_levels()
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(levels))
    n_test = int(round(len(levels) * DIGITS_TEST_FRACTION))
    idx = order[:n_test] if split == "test" else order[n_test:]
    idx = np.sort(idx)
    return levels[idx][:, None], target[idx]  # fancy indexing: new, writable arrays


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def data_root(data_dir: Optional[str]) -> Path:
    """Where the torchvision datasets live: `data_dir`, else DEFAULT_DATA_DIR."""
    return Path(data_dir or os.path.expanduser(DEFAULT_DATA_DIR))


def _idx_dataset(name: str, split: str, data_dir: Optional[str], attempt_download: bool = True):
    root = data_root(data_dir)
    image_stem, label_stem = _IDX_FILES[split]
    folders = [root, root / _TORCHVISION_FOLDER[name] / "raw"]
    for folder in folders:
        images, labels = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
        if images and labels:
            pixels, targets = read_idx_pair(images, labels, image_hw=(28, 28))
            return pixels[:, None], targets  # (N, 1, 28, 28), (N,)
    expected = [f"{folders[0]}/{s}[.gz]" for s in (image_stem, label_stem)]
    if not attempt_download:
        raise FileNotFoundError(f"{name} {split} split: torchvision's download left none of {', '.join(expected)}")
    _download_torchvision(name, root, split, expected=expected)
    return _idx_dataset(name, split, str(root), attempt_download=False)


def _download_torchvision(name: str, root: Path, split: str, expected: list[str]) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        cls(str(root), train=(split == "train"), download=True)
    except Exception as err:  # no network, checksum failure, unwritable root
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # torchvision's message spans lines
        raise FileNotFoundError(
            f"{name} {split} split not found in {root} and could not be downloaded. Put these files in place "
            f"and pass --data-dir {root}: {', '.join(expected)} (download error: {reason})"
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


def _image_file_dataset(name: str, split: str, data_dir: Optional[str], size: int, subset: int):
    """celeba or folder: decode only the (subset of the) split's files; labels are -1 (none)."""
    if not data_dir:
        raise ValueError(f"--dataset {name} needs --data-dir (the folder that holds the images)")
    if name == "celeba":
        folder, names = image_files.celeba_files(data_dir)
        chosen = image_files.celeba_split(len(names), split)
        paths, crop = [folder / names[i] for i in chosen], image_files.CELEBA_CROP
    else:
        files = image_files.folder_files(data_dir)
        paths, crop = [files[i] for i in np.sort(image_files.folder_split(len(files), split))], None
    paths = [paths[i] for i in subset_indices(len(paths), subset)]
    images = image_files.decode(paths, size, crop)  # (N, 3, S, S) uint8
    return images, np.full(len(images), -1, dtype=np.int64)


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
