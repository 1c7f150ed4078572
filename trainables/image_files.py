"""Datasets stored as image files: CelebA (through torchvision) and any folder of PNG/JPEG images.

Both give RGB uint8 arrays (N, 3, S, S) for a stated square size S, and both split
their images into train and test by a fixed seed, so every trial (and every process)
sees the same split. Only the images a caller asks for are decoded: a study on a
subset of CelebA's 141,819 training images does not decode all of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from trainables.idx import DataFileError

# CelebA as the authors' dataset.py uses it: the aligned 178x218 images, center-cropped to
# 140x140 and resized to 32x32, split by numpy's legacy shuffle seeded 2020 into the first
# 70% (train) and the next 10% (test) of the 202,599 images in file-name order.
CELEBA_CROP = 140
CELEBA_SPLIT_SEED = 2020
CELEBA_SPLIT = {"train": (0.0, 0.7), "test": (0.7, 0.8)}
DEFAULT_IMAGE_SIZE = 32  # celeba and folder: the authors' CelebA size and CIFAR-10's

FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION = 0.1  # share of a folder's images held out as its test split
FOLDER_SPLIT_SEED = 0


def celeba_files(data_dir: str) -> tuple[Path, list[str]]:
    """(image folder, file names in torchvision's order) of CelebA under data_dir/celeba/.

    torchvision's CelebA reads the annotation files and checks their md5 sums; where it
    cannot, the error names the layout it expects.
    """
    import torchvision.datasets as tvd

    try:
        ds = tvd.CelebA(data_dir, split="all", target_type=[], download=False)
    except (RuntimeError, OSError, ValueError) as err:
        message = " ".join(str(err).split())
        raise FileNotFoundError(
            f"CelebA not found or incomplete under {data_dir}/celeba ({type(err).__name__}: {message}). Put "
            f"torchvision's CelebA files there: img_align_celeba/*.jpg, list_eval_partition.txt, "
            f"identity_CelebA.txt, list_attr_celeba.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt"
        ) from None
    return Path(ds.root) / ds.base_folder / "img_align_celeba", list(ds.filename)


def celeba_split(count: int, split: str) -> np.ndarray:
    """Indices of `split` among `count` images: the authors' seeded 70% / 10% split."""
    order = np.arange(count)
    np.random.RandomState(CELEBA_SPLIT_SEED).shuffle(order)  # the legacy stream np.random.seed(2020) gives
    low, high = CELEBA_SPLIT[split]
    return order[int(count * low): int(count * high)]


def folder_files(data_dir: str) -> list[Path]:
    """Every PNG/JPEG file under data_dir (recursively), in sorted path order."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} is not a directory (a folder of PNG/JPEG images is needed)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise FileNotFoundError(f"{data_dir} holds {len(files)} PNG/JPEG images; a folder dataset needs at "
                                f"least 2 (one for each split), found by suffix {', '.join(FOLDER_SUFFIXES)}")
    return files


def folder_split(count: int, split: str) -> np.ndarray:
    """Indices of `split`: a seeded FOLDER_TEST_FRACTION of the images (at least one) is the test split."""
    order = np.random.default_rng(FOLDER_SPLIT_SEED).permutation(count)
    n_test = min(count - 1, max(1, round(count * FOLDER_TEST_FRACTION)))
    return order[:n_test] if split == "test" else order[n_test:]


def decode(paths: list[Path], size: int, crop: Optional[int] = None) -> np.ndarray:
    """RGB uint8 images (N, 3, size, size): center-crop to `crop` then resize the shorter side to
    `size` (CelebA), or, without `crop`, resize the shorter side then center-crop a square."""
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    steps = [transforms.CenterCrop(crop), transforms.Resize(size)] if crop else []
    steps += [transforms.Resize(size), transforms.CenterCrop(size)]
    transform = transforms.Compose(steps)
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                picture = transform(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataFileError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
        out[i] = np.asarray(picture, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    return out
