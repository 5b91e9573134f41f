"""Resumable writing of an HDF5 dataset file: ``<out>.partial/`` holds finished work as small shards.

Used by every prepare script (the datasets' ``prepare_scripts``).

Each shard (``shard_00000.h5``) holds a batch of processed segments -- the encoded clips and the
segments that failed -- and is written to a temporary name, flushed to the disk, then renamed,
so a shard is either complete or absent whatever happens to the process (a kill, a power cut).
A rerun reads the shards once, when it opens the folder, to know which segments are done (failed
segments are tried again: the audio may have been added meanwhile; a shard that cannot be read
is deleted and its segments are done again); from then on :class:`PartialRun` keeps that state
in memory. When all segments are processed, :func:`assemble` writes the final file
(``<out>.tmp``, flushed and renamed to ``<out>`` at the very end) with the clips in segment-CSV order.

Guarantee, for every prepare script on this writer: a run killed at any moment (SIGKILL
included) and rerun with the same command produces the same file as a run never interrupted,
byte for byte (``tests/test_fault_tolerance.py`` kills one while encoding, while writing a shard
and while writing the output). Segments that failed and succeed on the rerun (audio added
meanwhile) give the same content, possibly in another byte layout.

The final file has the original PaSST layout (see :mod:`helpers.data.hdf5_dataset`): ``audio_name``
(fixed-length bytes), ``mp3`` (vlen uint8), ``target`` (one row per clip, e.g. packbits), plus a few
root attributes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from helpers.data.atomic import replace_durably

__all__ = ["ShardBuffer", "PartialRun", "assemble"]

_VLEN_BYTES = h5py.vlen_dtype(np.dtype("uint8"))
_VLEN_STR = h5py.string_dtype("utf-8")


@dataclass
class ShardBuffer:
    """Segments processed since the last shard was written."""

    rows: list[int] = field(default_factory=list)
    mp3s: list[bytes] = field(default_factory=list)
    failed_rows: list[int] = field(default_factory=list)
    failed_reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows) + len(self.failed_rows)

    def add(self, row: int, mp3: bytes | None, reason: str | None) -> None:
        """Record one processed segment: its mp3 bytes, or the reason it failed."""
        if mp3 is None:
            self.failed_rows.append(row)
            self.failed_reasons.append(reason or "unknown error")
        else:
            self.rows.append(row)
            self.mp3s.append(mp3)


class PartialRun:
    """The ``<out>.partial/`` folder of an unfinished run.

    Args:
        folder: the folder (created if missing).
        manifest: the settings of the run; a rerun with different settings is refused, since
            mixing clips made with different settings would give an inconsistent file.

    Attributes:
        done: rows encoded so far (in the shards on disk); read-only for callers.
    """

    def __init__(self, folder: str | os.PathLike, manifest: dict) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):  # half-written shard of a killed run
            stale.unlink()
        manifest_path = self.folder / "manifest.json"
        if manifest_path.exists():
            previous = json.loads(manifest_path.read_text())
            if previous != manifest:
                changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
                raise RuntimeError(
                    f"{self.folder} holds an unfinished run made with different settings ({', '.join(changed)}); "
                    "rerun with the same settings to resume it, or delete that folder to start over."
                )
        else:
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        shards = sorted(self.folder.glob("shard_*.h5"))  # in writing order
        self._next_number = int(shards[-1].stem.split("_")[1]) + 1 if shards else 0
        self._shards: list[Path] = []
        self.done: set[int] = set()
        self._failed: dict[int, str] = {}  # every row that ever failed -> its latest reason
        for path in shards:
            try:
                with h5py.File(path, "r") as hf:
                    content = hf["row"][()].tolist(), hf["failed_row"][()].tolist(), hf["failed_reason"].asstr()[()]
            except (OSError, KeyError) as err:  # damaged on the disk after all (a failing drive...)
                warnings.warn(f"{path} cannot be read ({err}); deleted, its segments are processed again",
                              RuntimeWarning, stacklevel=2)
                path.unlink()
                continue
            self._shards.append(path)
            self._record(*content)

    def _record(self, rows: Sequence[int], failed_rows: Sequence[int], failed_reasons: Sequence[str]) -> None:
        """Add one shard's content to the in-memory state (later shards override reasons)."""
        self.done.update(rows)
        self._failed.update(zip(failed_rows, failed_reasons, strict=True))

    def shard_paths(self) -> list[Path]:
        """Finished shards, in the order they were written."""
        return list(self._shards)

    def processed_rows(self) -> tuple[set[int], set[int]]:
        """Rows already encoded and rows already failed (copies), over all finished shards."""
        return set(self.done), set(self._failed)

    def write_shard(self, buffer: ShardBuffer) -> None:
        """Persist ``buffer`` atomically as the next shard (nothing happens for an empty buffer)."""
        if not len(buffer):
            return
        final = self.folder / f"shard_{self._next_number:05d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset("row", data=np.asarray(buffer.rows, dtype=np.int64))
            mp3 = hf.create_dataset("mp3", shape=(len(buffer.mp3s),), dtype=_VLEN_BYTES)
            for i, data in enumerate(buffer.mp3s):
                mp3[i] = np.frombuffer(data, dtype=np.uint8)
            hf.create_dataset("failed_row", data=np.asarray(buffer.failed_rows, dtype=np.int64))
            hf.create_dataset("failed_reason", data=buffer.failed_reasons, dtype=_VLEN_STR)
        replace_durably(tmp, final)
        self._shards.append(final)
        self._next_number += 1
        self._record(buffer.rows, buffer.failed_rows, buffer.failed_reasons)

    def failures(self) -> dict[int, str]:
        """``row -> reason`` for every segment that failed and did not succeed on a later try."""
        return {row: reason for row, reason in self._failed.items() if row not in self.done}


def assemble(
    partial: PartialRun,
    out: str | os.PathLike,
    names: list[str],
    targets: np.ndarray,
    attrs: dict,
    progress: bool = True,
) -> int:
    """Write the final HDF5 file from the shards; returns the number of clips.

    Args:
        partial: the finished run.
        out: the output path; written as ``<out>.tmp`` and renamed when complete.
        names: ``audio_name`` of every segment row.
        targets: the target of every segment row, ``[rows, ...]`` (e.g. packbits ``uint8 [rows, width]``).
        attrs: root attributes to store (e.g. sample rate, label count).
    """
    out = Path(out)
    shards = partial.shard_paths()
    order = np.asarray(sorted(partial.done), dtype=np.int64)  # rows in CSV order = positions in the file
    tmp = out.with_name(out.name + ".tmp")
    name_len = max([20] + [len(n.encode("utf-8")) for n in names])  # original layout: 'S20'
    with h5py.File(tmp, "w") as hf:
        hf.create_dataset(
            "audio_name", data=np.asarray([names[r].encode("utf-8") for r in order], dtype=f"S{name_len}")
        )
        hf.create_dataset("target", data=targets[order])
        mp3 = hf.create_dataset("mp3", shape=(len(order),), dtype=_VLEN_BYTES)
        for key, value in attrs.items():
            hf.attrs[key] = value
        with tqdm(total=len(order), desc=f"writing {out.name}", unit="clip", disable=not progress) as bar:
            for path in shards:
                with h5py.File(path, "r") as shard:
                    rows = shard["row"][()]
                    positions = np.searchsorted(order, rows)
                    for pos, data in zip(positions.tolist(), shard["mp3"][()], strict=True):
                        mp3[pos] = data
                    bar.update(len(rows))
    replace_durably(tmp, out)
    return len(order)
