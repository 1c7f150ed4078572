"""The study directory on a local path or a pyarrow-supported URI (s3://, gs://, ...).

The study directory is Ray Tune's experiment directory `<storage_path>/<name>`; the
study's own files (study.json, the default MLflow database, summary tables) live beside
Ray's, so one directory holds everything a resume or an analysis needs.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from search_spaces.study_paths import is_uri, join_storage

STUDY_FILE = "study.json"           # the resolved StudyConfig, written once before the first trial
MLFLOW_DB = "mlflow.db"             # default MLflow tracking store (local storage paths only)
MLFLOW_ARTIFACTS = "mlartifacts"    # artifact root of the default store
OPTUNA_DB = "optuna.db"             # the Optuna study's RDB storage (local storage paths only)


def normalize_storage_path(path: str) -> str:
    """Absolute local path (~ expanded, file:// stripped) or the URI unchanged."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path if is_uri(path) else str(Path(os.path.expanduser(path)).resolve())


@dataclass(frozen=True)
class StudyDir:
    storage_path: str   # normalized, see normalize_storage_path
    name: str           # the study name

    @property
    def path(self) -> str:
        """`<storage_path>/<name>`; a URI's query (`?endpoint_override=...`) stays at the end."""
        return join_storage(self.storage_path, self.name)

    @property
    def is_local(self) -> bool:
        return not is_uri(self.storage_path)

    def _fs(self):
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.path
        return pyarrow.fs.FileSystem.from_uri(self.path)

    def exists(self, relative: str) -> bool:
        import pyarrow.fs

        fs, root = self._fs()
        return fs.get_file_info(f"{root}/{relative}").type != pyarrow.fs.FileType.NotFound

    def read_text(self, relative: str) -> str:
        fs, root = self._fs()
        with fs.open_input_stream(f"{root}/{relative}") as f:
            return f.read().decode()

    def write_text(self, relative: str, text: str) -> None:
        """Write atomically where the filesystem allows (local: temp file + rename)."""
        fs, root = self._fs()
        fs.create_dir(root, recursive=True)
        target = f"{root}/{relative}"
        if self.is_local:
            from trainables.atomic_write import atomic_write_text

            atomic_write_text(target, text)  # a failed write leaves the old file, no temp file
        else:  # an object store's PUT replaces the object whole
            with fs.open_output_stream(target) as f:
                f.write(text.encode())


def check_writable(storage_path: str) -> None:
    """Raise PermissionError/OSError with the reason if nothing can be created under storage_path.

    Local paths: walk up to the first existing ancestor and probe it with a temp file
    (creating no directories). URIs: the filesystem is resolved and its bucket (the first path
    part) must exist; write permission shows at the first write (the study lease).
    """
    if is_uri(storage_path):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        bucket = root.split("/", 1)[0]
        if bucket and fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            raise FileNotFoundError(f"bucket {bucket!r} does not exist (or these credentials cannot see it)")
        return
    path = Path(storage_path)
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file")
    probe = path / f".write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_text("")
    finally:
        probe.unlink(missing_ok=True)
