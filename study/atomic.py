"""Writes that land whole or not at all, and the one line a full disk ends a study with.

A file of ours is written to a temporary name in its directory, flushed to the disk and
renamed over the target (rename is atomic on POSIX filesystems): a crash or a full disk
leaves the previous version, never a cut one, and the temporary file is removed on failure.
"""
from __future__ import annotations

import errno
import os
import uuid
from typing import Optional

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_MESSAGES = ("no space left on device", "database or disk is full", "disk quota exceeded")


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (a power cut after it keeps the new name)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_full_reason(err: BaseException) -> Optional[str]:
    """'<file>: No space left on device' if `err` or an exception it was raised from is a full
    disk (OSError ENOSPC/EDQUOT, SQLite's 'database or disk is full', also wrapped by
    SQLAlchemy, MLflow or Ray); None otherwise."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
            where = f"{err.filename}: " if err.filename else ""
            return f"{where}{os.strerror(err.errno)}"
        text = str(err)
        lowered = text.lower()
        for message in FULL_MESSAGES:
            if message in lowered:
                start = lowered.index(message)
                return text[start:start + len(message)]
        err = err.__cause__ or err.__context__
    return None


def sweep_temp_files(directory: str) -> list[str]:
    """Remove the temporary files of writes a killed driver never finished (called under the study
    lock, so no write of ours is in flight); returns their names."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    swept = [n for n in names if n.startswith(".") and n.endswith(".tmp") and n.count(".") >= 3]
    for name in swept:
        try:
            os.unlink(os.path.join(directory, name))
        except (FileNotFoundError, IsADirectoryError):
            pass
    return swept
