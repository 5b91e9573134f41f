"""Writing a file so that a crash leaves either the old file or the new one, never a part of one.

:func:`atomic_write` writes into ``<path>.partial`` in the same folder, flushes it to the disk
(``fsync``), renames it over ``path`` (atomic on POSIX file systems) and flushes the folder, so
the rename itself survives a power cut. A process killed at any moment (SIGKILL, OOM killer)
leaves the previous ``path`` untouched; at worst a ``.partial`` file stays behind, which the
next write of the same path replaces. When writing fails (a full disk, a quota), the partial
file is removed and the error names the file and what is left intact.

Used for training checkpoints (:mod:`helpers.training.checkpoint_io`) and the files of the
prepare scripts (:mod:`helpers.data.hdf5_writer`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["PARTIAL_SUFFIX", "WriteFailedError", "atomic_write", "fsync_folder", "partial_path", "replace_durably"]

PARTIAL_SUFFIX = ".partial"

#: errors that mean "no room to write": the report says so in words
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class WriteFailedError(OSError):
    """A file could not be written; ``path`` and anything written before it are intact."""


def partial_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_write` writes ``path`` before renaming it."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) do not sync folders
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush the finished file ``tmp`` to the disk, rename it to ``path``, flush the rename.

    For files written by a library that wants a path (h5py) rather than a file object.
    """
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


def describe_write_error(path: str | os.PathLike, err: BaseException) -> str:
    """A one-line reason for a failed write of ``path``, saying "disk full" when that is the cause."""
    no_space = isinstance(err, OSError) and err.errno in _NO_SPACE
    if not no_space and "No space left" not in str(err) and "file write failed" not in str(err):
        return f"writing {os.fspath(path)} failed: {err}"
    folder = Path(path).resolve().parent
    try:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        space = f"{free / 2**20:.1f} MiB free on that file system"
    except OSError:
        space = "free space unknown"
    return f"the disk is full (or over quota) writing {os.fspath(path)}: {err} ({space})"


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete or not at all.

    Raises:
        WriteFailedError: writing, flushing or renaming failed (the message says whether the
            disk is full); ``path`` still holds what it held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, WriteFailedError):
            previous = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not created"
            raise WriteFailedError(getattr(err, "errno", None) or errno.EIO,
                                   f"{describe_write_error(path, err)}; {previous}") from err
        raise
    fsync_folder(path.parent)
