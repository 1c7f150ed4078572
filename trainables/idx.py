"""IDX files (the MNIST format), plain or gzip-compressed, read with one-line errors.

An IDX file is a 4-byte magic number (0x00 0x00, a type code, the number of
dimensions), one big-endian uint32 size per dimension, then the data in C order.
Every way a real file can be broken (empty, cut short, not gzip although named .gz,
another format, sizes that do not match the data) ends in a DataFileError naming the
file and what is wrong, never an IndexError or a gzip traceback.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

UNSIGNED_BYTE = 0x08  # the type code of MNIST's files; other IDX types are not used by any dataset here
GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(ValueError):
    """A dataset file exists but is not what it should be (message: one line, naming the file)."""


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz."""
    raw = path.read_bytes()
    if not str(path).endswith(".gz"):
        return raw
    if raw[:2] != GZIP_MAGIC:
        raise DataFileError(f"{path}: named .gz but is not gzip-compressed (starts with {raw[:4].hex() or 'nothing'}); "
                            "re-download it or drop the .gz from its name if it holds the plain IDX data")
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataFileError(f"{path}: the gzip stream is cut short ({len(raw)} bytes); re-download the file") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DataFileError(f"{path}: corrupt gzip data ({err}); re-download the file") from None


def read_idx(path) -> np.ndarray:
    """An unsigned-byte IDX file (optionally .gz) as a uint8 array of the shape its header states."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes, too short for the 4-byte IDX magic number "
                            "(an empty or truncated file)")
    if raw[0] != 0 or raw[1] != 0 or not 1 <= raw[3] <= 4:
        raise DataFileError(f"{path}: magic number {raw[:4].hex()} is not an IDX file's (00 00 08 0N): "
                            "another format, or the wrong file under this name")
    if raw[2] != UNSIGNED_BYTE:
        raise DataFileError(f"{path}: IDX type code 0x{raw[2]:02x}; only unsigned-byte (0x08) files are supported")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataFileError(f"{path}: header cut short ({len(raw)} of {header} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected, held = int(np.prod(shape)), len(raw) - header
    if held != expected:
        what = "cut short" if held < expected else "longer than its header says"
        raise DataFileError(f"{path}: {what}: header says {'x'.join(map(str, shape))} = {expected} bytes "
                            f"of data, the file holds {held}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_pair(images_path: Path, labels_path: Path, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) from two IDX files that must agree with each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != tuple(image_hw):
        raise DataFileError(f"{images_path}: holds an array of shape {images.shape}, not images "
                            f"(N, {image_hw[0]}, {image_hw[1]})")
    if labels.ndim != 1:
        raise DataFileError(f"{labels_path}: holds an array of shape {labels.shape}, not labels (N,)")
    if len(images) != len(labels):
        raise DataFileError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                            "labels; the two files are from different splits or one is damaged")
    return images, labels
