"""Where derived artifacts (trained classifiers, reference statistics) are cached, and their hashes.

They are written with trainables/atomic_write.py, so that parallel trials racing on the same
file never see half of it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

CACHE_ENV_VAR = "SMOOTHING_STUDY_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/smoothing-study"
DEFAULT_DATA_DIR = f"{DEFAULT_CACHE_DIR}/data"  # torchvision datasets without --data-dir
INCEPTION_WEIGHTS_ENV_VAR = "SMOOTHING_STUDY_INCEPTION_WEIGHTS"  # the TF-Inception weights file (extractors.py)


def resolve_cache_dir(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The argument, else $SMOOTHING_STUDY_CACHE, else ~/.cache/smoothing-study (created)."""
    chosen = cache_dir or os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    path = Path(os.path.expanduser(str(chosen)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of_arrays(*arrays) -> str:
    """Hex sha256 over dtype, shape and bytes of numpy arrays (order matters)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array.tobytes() if not array.flags.c_contiguous else array).cast("B"))
    return digest.hexdigest()


def sha256_of_file(path: Union[str, Path], chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's contents, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
