"""Resumable writing of an HDF5 dataset file: ``<out>.partial/`` holds finished work as small shards.

Used by every prepare script (the datasets' ``prepare_scripts``): a script turns its release into
a list of clips (names, targets and where the audio is) and calls :func:`write_hdf5`, which
encodes the clips (in worker processes, with a progress bar), keeps finished work, lists the
failures in ``<out>.failed.txt`` and writes ``<out>``.

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

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import h5py
import numpy as np
from tqdm import tqdm

from helpers.data.atomic import replace_durably
from helpers.data.audio_io import AudioDecodeError, encode_mp3, load_audio

__all__ = ["ShardBuffer", "PartialRun", "PrepareResult", "assemble", "encode_file", "add_encoding_arguments", "run_prepare", "run_tasks",
           "write_hdf5"]

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


@dataclass
class PrepareResult:
    """What :func:`write_hdf5` produced."""

    out: Path
    n_written: int
    failed: list[tuple[str, str]]  # (clip id, reason)
    failed_path: Path | None


#: a task is a tuple whose first element is the clip's row; the encoder returns (row, mp3 bytes, None)
#: or (row, None, reason); it must be a module-level function (it runs in worker processes)
Encoder = Callable[[tuple], tuple[int, "bytes | None", "str | None"]]


def encode_file(task: tuple) -> tuple[int, bytes | None, str | None]:
    """Encoder of whole files: ``(row, path or None, sample_rate, bit_rate)`` -> mono mp3 of the file."""
    row, path, sample_rate, bit_rate = task
    if path is None:
        return row, None, "audio file not found"
    try:
        return row, encode_mp3(load_audio(path, sample_rate), sample_rate, bit_rate=bit_rate), None
    except (AudioDecodeError, OSError, ValueError, av.error.FFmpegError) as err:
        return row, None, f"{path}: {err}"


def run_tasks(tasks: list[tuple], encode: Encoder, partial: PartialRun, workers: int, shard_size: int, total: int,
              progress: bool, label: str) -> None:
    """Encode ``tasks`` (in order), writing a shard every ``shard_size`` clips and on any exit."""
    buffer = ShardBuffer()
    bar = tqdm(total=total, initial=total - len(tasks), desc=f"encoding {label}", unit="clip", disable=not progress)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    # Submit in windows so that millions of clips do not become millions of pending futures.
    window = max(shard_size, 64 * workers)
    try:
        for start in range(0, len(tasks), window):
            chunk = tasks[start : start + window]
            results = pool.map(encode, chunk, chunksize=4) if pool else map(encode, chunk)
            for row, mp3, reason in results:
                buffer.add(row, mp3, reason)
                bar.update(1)
                if len(buffer) >= shard_size:
                    partial.write_shard(buffer)
                    buffer = ShardBuffer()
    finally:
        # Keep everything finished so far, also on Ctrl-C or an error, so a rerun resumes here.
        partial.write_shard(buffer)
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def write_hdf5(
    out: str | os.PathLike,
    *,
    names: list[str],
    targets: np.ndarray,
    attrs: dict,
    manifest: dict,
    make_tasks: Callable[[list[int]], list[tuple]],
    encode: Encoder = encode_file,
    ids: Sequence[str] | None = None,
    what: str = "clips",
    empty_hint: str = "",
    workers: int = 1,
    shard_size: int = 500,
    progress: bool = True,
) -> PrepareResult:
    """Encode every clip not done yet, then write ``out`` from all finished work.

    Args:
        out: the HDF5 file; finished work waits in ``<out>.partial/`` until every clip is processed.
        names / targets: ``audio_name`` and ``target`` of every row, in file order.
        attrs: root attributes of the file.
        manifest: the settings of the run (a rerun with other settings is refused).
        make_tasks: ``rows -> tasks`` for the rows still to encode (only called when there are some,
            so an expensive audio index is built only then).
        encode: the encoder of a task (default :func:`encode_file`).
        ids: how failures are named in ``<out>.failed.txt`` (default: ``names``).
        what / empty_hint: the error when no clip at all can be read says "none of the N <what>
            could be read; <empty_hint>".
        workers / shard_size / progress: encoding processes, clips per resume checkpoint, tqdm bars.
    """
    out = Path(out)
    ids = list(ids if ids is not None else names)
    partial = PartialRun(out.with_name(out.name + ".partial"), manifest)
    # Failed clips are retried: cheap, and their audio may have been added since.
    pending = [row for row in range(len(names)) if row not in partial.done]
    if pending:
        run_tasks(make_tasks(pending), encode, partial, workers, shard_size, len(names), progress, out.name)

    failed = [(ids[row], reason) for row, reason in sorted(partial.failures().items())]
    failed_path = out.with_name(out.name + ".failed.txt")
    if failed:
        failed_path.write_text("".join(f"{name}\t{reason}\n" for name, reason in failed), encoding="utf-8")
    else:
        failed_path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if len(failed) == len(names):
        raise RuntimeError(f"none of the {len(names)} {what} could be read (see {failed_path}); {empty_hint}")
    n_written = assemble(partial, out, names, targets, attrs, progress=progress)
    for path in partial.folder.iterdir():
        path.unlink()
    partial.folder.rmdir()
    return PrepareResult(out, n_written, failed, failed_path if failed else None)


def add_encoding_arguments(parser: argparse.ArgumentParser, unit: str = "clips") -> None:
    """The options of every prepare script on this writer: ``--sample-rate``, ``--bitrate``,
    ``--workers`` and ``--shard-size`` (``unit`` per resume checkpoint)."""
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument("--bitrate", type=int, default=None, help="mp3 bit rate in bit/s (default: FFmpeg's)")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes")
    parser.add_argument("--shard-size", type=int, default=500, help=f"{unit} per resume checkpoint")


def run_prepare(work: Callable[[], Sequence[PrepareResult]], what: str = "clip") -> int:
    """A prepare script's command line around ``work``: prints what was written and what failed
    (the first five, then the list's path); returns the exit status (130 when interrupted, the
    finished work being kept for a rerun; 1 with the message of an expected error)."""
    try:
        results = work()
    except KeyboardInterrupt:
        print("\ninterrupted; finished clips are kept -- rerun the same command to resume", file=sys.stderr)
        return 130
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for result in results:
        print(f"wrote {result.n_written} clips to {result.out}")
        if result.failed:
            print(f"  {len(result.failed)} {what}(s) failed (missing or unreadable audio), listed in {result.failed_path}")
            for name, reason in result.failed[:5]:
                print(f"    {name}: {reason}")
            if len(result.failed) > 5:
                print(f"    ... and {len(result.failed) - 5} more")
    return 0
