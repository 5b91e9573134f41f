"""Counting clips that failed to decode during a run, across DataLoader workers and DDP ranks.

:class:`helpers.data.hdf5_dataset.Hdf5AudioDataset` skips an undecodable clip and, when its
``corrupt_log`` attribute names a file, appends one line per failure to it (from whatever process
decoded). :func:`attach_corrupt_log` points every such dataset inside a wrapped/concatenated
dataset at a log file before the DataLoader copies it into workers; :func:`count_corrupt`
reads the count back at the end of the run (for sacred's ``_run.info``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from helpers.data.hdf5_dataset import read_corrupt_log


def leaf_datasets(dataset: object) -> Iterator[object]:
    """The datasets that decode clips (those with a ``corrupt_log`` attribute) inside wrappers/concats."""
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        ds = stack.pop()
        if ds is None or id(ds) in seen:
            continue
        seen.add(id(ds))
        if "corrupt_log" in getattr(ds, "__dict__", {}):
            yield ds
        inner = vars(ds) if hasattr(ds, "__dict__") else {}
        stack.extend(inner.get("datasets") or [])  # ConcatDataset
        stack.append(inner.get("dataset"))  # wrappers, Subset


def attach_corrupt_log(dataset: object, path: str | os.PathLike) -> str:
    """Make every decoding dataset inside ``dataset`` log failures to its own log or ``path``.

    A log the config already set (``basedataset.corrupt_log``) is kept. Returns the log in use
    (the first one found, ``path`` when none was set).
    """
    used = None
    for ds in leaf_datasets(dataset):
        if ds.corrupt_log is None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            ds.corrupt_log = os.fspath(path)
        used = used or ds.corrupt_log
    return used or os.fspath(path)


def count_corrupt(path: str | os.PathLike | None, since: int = 0) -> int:
    """Lines in the corrupt-clip log ``path`` beyond the first ``since`` (0 when there is no log)."""
    if path is None:
        return 0
    return max(0, len(read_corrupt_log(path)) - since)


def corrupt_examples(path: str | os.PathLike | None, since: int = 0, limit: int = 20) -> list[str]:
    """Up to ``limit`` ``"name (index i): error"`` strings of the failures after line ``since``."""
    if path is None:
        return []
    return [f"{name} (index {index}): {error}" for index, name, error in read_corrupt_log(path)[since:since + limit]]
