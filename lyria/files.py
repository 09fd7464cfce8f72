"""Atomic file writes: a temporary file in the target's folder, flushed and fsynced, then renamed over it.

A crash or a kill during the write leaves the previous file as it was (and at worst a `.NAME.tmp-*` file
beside it, which readers ignore); a full disk raises `DiskFullError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from lyria.errors import DiskFullError, is_disk_full

TEMP_MARK = ".tmp-"


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is a leftover of an interrupted atomic write (`.NAME.tmp-XXXX`)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, what: str = "file") -> Iterator[IO[bytes]]:
    """A binary file object whose contents replace `path` only once the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception) and is_disk_full(err):
            kept = "the previous version is intact" if path.exists() else "nothing was written"
            raise DiskFullError(f"disk full while writing the {what} {path} ({kept}); free some space and run again") from err
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO[bytes]], None], what: str = "file") -> Path:
    """Writes bytes, text (UTF-8) or whatever `data(handle)` writes to `path` atomically; returns the path."""
    with atomic_open(path, what) as handle:
        if callable(data):
            data(handle)
        else:
            handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
