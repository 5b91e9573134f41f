"""Clips that fail to decode during a run: skipped, counted across DataLoader workers and DDP ranks.

Every dataset that decodes audio (:class:`helpers.data.hdf5_dataset.Hdf5AudioDataset`,
:class:`helpers.data.audio_files.AudioFileDataset`) is a :class:`SkipsUndecodableClips`: a clip
that fails to decode is reported with ``warnings.warn`` (name, index, source), counted, and
replaced by the next index (``index + 1``, wrapping), so the result is deterministic;
``strict_decoding=True`` raises instead. The counts live in the process that decoded
(``dataset.num_corrupt``, ``dataset.corrupt_entries``); when the ``corrupt_log`` attribute names
a file, every process also appends one line per failure (``index<TAB>name<TAB>error``) to it.
:func:`attach_corrupt_log` points every such dataset inside a wrapped/concatenated dataset at a
log file before the DataLoader copies it into workers; :func:`count_corrupt` reads the count
back at the end of the run (for sacred's ``_run.info``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from helpers.data.audio_io import AudioDecodeError

Item = TypeVar("Item")


class CorruptClipError(RuntimeError):
    """Raised for an undecodable clip when ``strict_decoding=True`` (or too many in a row)."""


class SkipsUndecodableClips:
    """What a decoding dataset does with a clip that does not decode (module docstring).

    A subclass calls :meth:`init_skipping` in its ``__init__`` and reads items with
    :meth:`first_decodable`.
    """

    #: what the error says when ``max_skips + 1`` clips in a row failed
    damaged_hint = "the data looks damaged; recreate it with the prepare script of its dataset"

    def init_skipping(self, source: str, strict_decoding: bool = False, corrupt_log: str | os.PathLike | None = None,
                      max_skips: int = 100) -> None:
        self.skip_source = source  # named in warnings and errors (a file or a folder)
        self.strict_decoding = strict_decoding
        self.corrupt_log = os.fspath(corrupt_log) if corrupt_log is not None else None
        self.max_skips = max_skips
        self.corrupt_entries: list[tuple[int, str, str]] = []

    @property
    def num_corrupt(self) -> int:
        """Corrupt clips skipped so far in this process."""
        return len(self.corrupt_entries)

    def first_decodable(self, index: int, length: int, read: Callable[[int], Item],
                        name: Callable[[int], str]) -> Item:
        """``read(index)``, or of the next index whose clip decodes (``read`` raises
        :class:`~helpers.data.audio_io.AudioDecodeError` for a clip that does not)."""
        for attempt in range(self.max_skips + 1):
            current = (index + attempt) % length
            try:
                return read(current)
            except AudioDecodeError as err:
                self._report_corrupt(current, name(current), err)
        raise CorruptClipError(f"{self.skip_source}: {self.max_skips + 1} corrupt clips in a row from index "
                               f"{index}; {self.damaged_hint}")

    def _report_corrupt(self, index: int, name: str, err: Exception) -> None:
        """Warn/count/log the corrupt clip ``index`` named ``name``, or raise in strict mode."""
        message = f"corrupt audio clip {name!r} (index {index}) in {self.skip_source}: {err}"
        if self.strict_decoding:
            raise CorruptClipError(message + " (strict_decoding=True; set it to False to skip such clips)") from err
        warnings.warn(message + "; skipped, using the next clip instead", RuntimeWarning, stacklevel=4)
        self.corrupt_entries.append((index, name, str(err)))
        if self.corrupt_log is not None:
            line = f"{index}\t{name}\t{str(err).replace(chr(9), ' ').replace(chr(10), ' ')}\n"
            # One small O_APPEND write per line keeps lines from several workers intact.
            Path(self.corrupt_log).parent.mkdir(parents=True, exist_ok=True)
            with open(self.corrupt_log, "a", encoding="utf-8") as fh:
                fh.write(line)


def read_corrupt_log(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """Read a ``corrupt_log`` file back as ``(index, name, error)`` tuples (empty if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        index, name, error = line.split("\t", 2)
        entries.append((int(index), name, error))
    return entries


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


def attach_corrupt_log(dataset: object, path: str | os.PathLike, replacing: str | os.PathLike | None = None) -> str:
    """Make every decoding dataset inside ``dataset`` log failures to its own log or ``path``.

    A log the config already set (``basedataset.corrupt_log``) is kept, unless it is ``replacing``
    (a log attached before, moving to another run folder). Returns the log in use (the first one
    found, ``path`` when none was set). Its folder is created by the first failure written.
    """
    used = None
    replacing = os.fspath(replacing) if replacing is not None else None
    for ds in leaf_datasets(dataset):
        if ds.corrupt_log is None or ds.corrupt_log == replacing:
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
