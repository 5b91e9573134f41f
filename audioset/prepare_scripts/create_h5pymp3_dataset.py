"""Create an AudioSet HDF5 file (32 kHz mono mp3 clips + packed labels) from downloaded audio.

Usage (from the repository root)::

    python -m audioset.prepare_scripts.create_h5pymp3_dataset \\
        --segments balanced_train_segments.csv --audio-dir /data/audioset/balanced_train \\
        --out audioset_hdf5s/mp3/balanced_train_segments_mp3.hdf [--labels class_labels_indices.csv] \\
        [--workers 8]

(``python audioset/prepare_scripts/create_h5pymp3_dataset.py ...`` works too.)

* Audio: files named ``<ytid>.<ext>`` or ``Y<ytid>.<ext>`` below ``--audio-dir``, any format
  FFmpeg reads. Each is decoded, resampled to 32 kHz mono, cut to the segment length
  (``end - start`` seconds, from the file start; ``--cut-segments`` cuts ``[start, end]`` for
  files holding the whole video) and encoded as mp3.
* Labels: ``--labels`` or the official list, downloaded once into
  ``<torch.hub.get_dir()>/audioset/`` (see :mod:`models.labels`).
* Missing or unreadable audio is not fatal: it is listed in ``<out>.failed.txt`` and summarised
  (if nothing at all can be read, the run fails instead of writing an empty file).
* Interrupting is safe: finished work is kept in ``<out>.partial/``; rerun the same command to
  resume (segments that failed are tried again). The output appears (atomic rename) only once
  complete.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import av
import numpy as np

from audioset.prepare_scripts.segments import Segment, find_audio, index_audio_files, read_segments
from helpers.data.audio_io import AudioDecodeError, encode_mp3, load_audio
from helpers.data.hdf5_writer import PrepareResult, add_encoding_arguments, run_prepare, write_hdf5
from models.labels import ensure_labels_csv, read_labels

__all__ = ["PrepareResult", "create_hdf5", "encode_segment", "audio_name", "main"]


def audio_name(ytid: str) -> str:
    """The ``audio_name`` stored for a segment (the original project's ``Y<ytid>.mp3``)."""
    return f"Y{ytid}.mp3"


def encode_segment(
    path: str | None, start: float, end: float, sample_rate: int, bit_rate: int | None, cut_segments: bool
) -> tuple[bytes | None, str | None]:
    """Decode one audio file and re-encode the segment as mono mp3; ``(mp3, None)`` or ``(None, reason)``."""
    if path is None:
        return None, "audio file not found"
    try:
        wave = load_audio(path, sample_rate)
        length = max(1, int(round((end - start) * sample_rate)))
        offset = int(round(start * sample_rate)) if cut_segments else 0
        wave = wave[offset : offset + length]
        if wave.size == 0:
            return None, f"{path}: no audio in [{start}, {end}] s"
        return encode_mp3(wave, sample_rate, bit_rate=bit_rate), None
    except (AudioDecodeError, OSError, ValueError, av.error.FFmpegError) as err:
        return None, f"{path}: {err}"


def _encode_task(task: tuple) -> tuple[int, bytes | None, str | None]:
    """Pool entry point: ``(row, path, start, end, sr, bit_rate, cut)`` -> ``(row, mp3, reason)``."""
    row, *args = task
    mp3, reason = encode_segment(*args)
    return row, mp3, reason


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _packed_targets(segments: list[Segment], mids: list[str], segments_csv: Path, labels_csv: Path) -> np.ndarray:
    """``np.packbits`` multi-hot targets of every segment; unknown MIDs are an error (wrong label file)."""
    column = {mid: i for i, mid in enumerate(mids)}
    dense = np.zeros((len(segments), len(mids)), dtype=bool)
    for row, seg in enumerate(segments):
        for mid in seg.labels:
            if mid not in column:
                raise ValueError(
                    f"{segments_csv}: segment {seg.ytid} has label {mid!r}, which is not in the label list "
                    f"{labels_csv}; use the class_labels_indices.csv of the same AudioSet release"
                )
            dense[row, column[mid]] = True
    return np.packbits(dense, axis=-1)


def create_hdf5(
    segments_csv: str | os.PathLike,
    audio_dir: str | os.PathLike,
    out: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    *,
    sample_rate: int = 32000,
    bit_rate: int | None = None,
    cut_segments: bool = False,
    workers: int = 1,
    shard_size: int = 500,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Build ``out`` from a segment CSV and a folder of audio (see the module docstring).

    Args:
        segments_csv: official segment list (``balanced_train_segments.csv``, ...).
        audio_dir: folder with the downloaded audio, searched recursively.
        out: the HDF5 file to create.
        labels_csv: label list; None uses (and if needed downloads) the cached official one.
        sample_rate: sample rate of the stored mp3s.
        bit_rate: mp3 bit rate in bit/s; None keeps FFmpeg's default.
        cut_segments: cut ``[start, end]`` from each file instead of taking its beginning.
        workers: encoding processes (1: encode in this process).
        shard_size: segments per resume checkpoint.
        overwrite: replace an existing ``out`` (it stays intact until the new one is complete).
        progress: show tqdm progress bars.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        FileNotFoundError / ValueError / RuntimeError: bad inputs, with the file named.
    """
    out = Path(out)
    segments_csv = Path(segments_csv)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to recreate it")
    if not segments_csv.is_file():
        raise FileNotFoundError(f"segment CSV not found: {segments_csv}")
    labels_path = ensure_labels_csv(labels_csv)
    mids = read_labels(labels_path)
    segments = read_segments(segments_csv)
    targets = _packed_targets(segments, mids, segments_csv, labels_path)
    names = [audio_name(seg.ytid) for seg in segments]
    out.parent.mkdir(parents=True, exist_ok=True)

    manifest = {
        "segments_csv_sha1": _sha1(segments_csv),
        "labels_sha1": _sha1(labels_path),
        "sample_rate": sample_rate,
        "bit_rate": bit_rate,
        "cut_segments": cut_segments,
    }

    def make_tasks(rows: list[int]) -> list[tuple]:
        files = index_audio_files(audio_dir)
        tasks = []
        for row in rows:
            seg = segments[row]
            path = find_audio(files, seg.ytid)
            tasks.append((row, os.fspath(path) if path else None, seg.start, seg.end, sample_rate, bit_rate, cut_segments))
        return tasks

    return write_hdf5(
        out, names=names, targets=targets, manifest=manifest, make_tasks=make_tasks, encode=_encode_task,
        attrs={"sample_rate": sample_rate, "n_classes": len(mids), "segments_csv": segments_csv.name},
        ids=[seg.ytid for seg in segments], what=f"segments of {segments_csv}",
        empty_hint=f"check --audio-dir {audio_dir} and the file naming (<ytid>.<ext> or Y<ytid>.<ext>)",
        workers=workers, shard_size=shard_size, progress=progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m audioset.prepare_scripts.create_h5pymp3_dataset",
        description="Turn downloaded AudioSet audio + a segment CSV into a PaSST HDF5 file (32 kHz mono mp3).",
    )
    parser.add_argument("--segments", required=True, help="official segment CSV, e.g. balanced_train_segments.csv")
    parser.add_argument("--audio-dir", required=True, help="folder of downloaded audio named <ytid>.* or Y<ytid>.*")
    parser.add_argument("--out", required=True, help="HDF5 file to create, e.g. audioset_hdf5s/mp3/balanced_train_segments_mp3.hdf")
    parser.add_argument("--labels", default=None, help="class_labels_indices.csv (default: download into the torch hub cache)")
    add_encoding_arguments(parser, unit="segments")
    parser.add_argument("--cut-segments", action="store_true", help="cut [start, end] from files holding whole videos")
    parser.add_argument("--overwrite", action="store_true", help="recreate --out if it exists")
    args = parser.parse_args(argv)
    return run_prepare(lambda: [create_hdf5(args.segments, args.audio_dir, args.out, args.labels,
                                            sample_rate=args.sample_rate, bit_rate=args.bitrate,
                                            cut_segments=args.cut_segments, workers=args.workers,
                                            shard_size=args.shard_size, overwrite=args.overwrite)], what="segment")


if __name__ == "__main__":
    sys.exit(main())
