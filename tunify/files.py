"""Writing files so a reader sees the old or the new version, never half, and others can read them.

``tempfile`` makes its files 0600 and its folders 0700 (private to the writer); a run folder
or published model is meant to be read by others (a shared machine, a web server, a CI
artifact), so everything written here ends up 0644 (files) and 0755 (folders).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["FILE_MODE", "DIR_MODE", "atomic_write_text", "atomic_write_bytes", "make_readable"]

FILE_MODE, DIR_MODE = 0o644, 0o755


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` under a temporary name, fsync, chmod 0644, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """:func:`atomic_write_bytes` for text (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def make_readable(path: Union[str, Path]) -> None:
    """chmod a folder 0755 and every file and folder in it 0644 / 0755."""
    path = Path(path)
    os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
    if path.is_dir():
        for p in path.rglob("*"):
            os.chmod(p, DIR_MODE if p.is_dir() else FILE_MODE)
