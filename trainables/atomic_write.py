"""The project's one atomic writer: a file lands whole or not at all.

The new contents go to a temporary file beside the target (`.<name>.<32 hex>.tmp`), are
flushed and fsync'ed, and os.replace'd over the target (atomic on POSIX within one
filesystem), then the directory is fsync'ed so that the rename survives a power cut. A
reader, or a parallel writer racing on the same cache file, sees the old file or a complete
new one. On any failure (a full disk, an exception in the callback, Ctrl-C) the temporary
file is removed and the old file is left as it was. A SIGKILL between write and rename can
leave a temporary file: `sweep_temp_files` removes those when no write is in flight.

Permissions are those of a plain `open(path, "w")`: a new file gets 0o666 less the umask,
an existing file keeps its mode.
"""
from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]
TEMP_SUFFIX = ".tmp"


def temp_name(name: str) -> str:
    """The temporary file name a write of `name` uses."""
    return f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """True for names `temp_name` makes (and only those: not `.hidden` or `x.tmp` files of others)."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    stem = name[1:-len(TEMP_SUFFIX)]
    target, _, token = stem.rpartition(".")
    return bool(target) and len(token) >= 8 and all(c in "0123456789abcdef" for c in token)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(binary file object) on a temporary file beside `path`, then install it as `path`.

    For writers that take a file object: `atomic_write(p, lambda f: torch.save(obj, f))`,
    `np.savez`, `pickle.dump`. Creates the parent directory; returns `path` as a Path.
    """
    def fill(fd: int, tmp: Path) -> None:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    return _install(Path(path), fill)


def atomic_write_from(path: PathLike, produce: Callable[[Path], object]) -> Path:
    """Call produce(temporary path) for a tool that writes a file by name (a compiler's `-o`), then
    fsync that file and install it as `path`."""
    def fill(fd: int, tmp: Path) -> None:
        os.close(fd)  # the name is reserved; the tool writes (or replaces) the file behind it
        produce(tmp)
        written = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(written)
        finally:
            os.close(written)

    return _install(Path(path), fill)


def _install(path: Path, fill: Callable[[int, Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        fill(fd, tmp)
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: no temporary file outlives a failed write
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def _keep_mode(path: Path, tmp: Path) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def sweep_temp_files(directory: PathLike) -> list[str]:
    """Remove the temporary files of writes a killed process never finished (call it only when no
    write into `directory` is in flight, e.g. under the study lock); returns their names."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    swept = [name for name in names if is_temp_name(name)]
    for name in swept:
        try:
            os.unlink(os.path.join(directory, name))
        except (FileNotFoundError, IsADirectoryError):
            pass
    return swept
