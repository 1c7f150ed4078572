"""Where derived artifacts (trained classifiers, reference statistics) are cached, and how
they are written so that parallel trials racing on the same file never see half of it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

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


def atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Call write(binary file object) on a temporary file beside `path`, then os.replace it.

    os.replace is atomic on POSIX within one file system: a reader sees the old file or
    the complete new one, and two writers racing (parallel Ray trials) each install a
    complete file; the last one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


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
