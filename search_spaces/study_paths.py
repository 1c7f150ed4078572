"""Where a study lives: `<storage_path>/<name>` on a local path or a pyarrow URI (s3://, gs://, ...).

Here, in the bottom layer, because study (which writes the directory) and analysis (which
reads it) both spell the path and neither may import the other.
"""
from __future__ import annotations


def is_uri(path: str) -> bool:
    """A remote storage URI (s3://, gs://, ...); file:// and plain paths are local."""
    return "://" in path and not path.startswith("file://")


def join_storage(storage_path: str, *parts: str) -> str:
    """`storage_path` with `parts` appended to its path, before a URI's query string (pyarrow's
    `s3://bucket/dir?endpoint_override=host:port&scheme=http` form keeps working)."""
    base, sep, query = storage_path.partition("?") if is_uri(storage_path) else (storage_path, "", "")
    return "/".join([base.rstrip("/"), *parts]) + sep + query
