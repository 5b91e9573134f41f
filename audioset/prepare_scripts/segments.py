"""Official AudioSet segment CSVs and finding the downloaded audio of each segment.

Segment CSV format (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
``eval_segments.csv``): comment lines starting with ``#``, then rows
``YTID, start_seconds, end_seconds, "label1,label2"`` with labels as MIDs (``/m/09x0r``).

Audio files are matched by YouTube id: ``<ytid>.<ext>`` or the original project's
``Y<ytid>.<ext>``, anywhere below the audio folder, any extension FFmpeg reads (``.wav``,
``.mp3``, ``.flac``, ``.m4a``, ``.webm``, ...). The name is cut at the first dot, so
``<ytid>.f251.webm`` matches too.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Segment", "read_segments", "index_audio_files", "find_audio"]

# Files next to downloaded audio that are certainly not audio (downloader leftovers, metadata).
_NOT_AUDIO = {".txt", ".csv", ".json", ".part", ".ytdl", ".tmp", ".jpg", ".jpeg", ".png", ".webp", ".log"}


@dataclass(frozen=True)
class Segment:
    """One row of a segment CSV."""

    ytid: str
    start: float
    end: float
    labels: tuple[str, ...]


def read_segments(path: str | os.PathLike) -> list[Segment]:
    """Parse a segment CSV; duplicate YouTube ids keep their first row (with a warning).

    Raises:
        ValueError: naming file and line for a malformed row.
    """
    path = Path(path)
    segments: list[Segment] = []
    seen: set[str] = set()
    duplicates = 0
    with path.open(newline="", encoding="utf-8") as fh:
        for line_no, row in enumerate(csv.reader(fh, skipinitialspace=True), start=1):
            if not row or row[0].startswith("#") or not "".join(row).strip():
                continue
            if len(row) != 4:
                raise ValueError(
                    f"{path}:{line_no}: expected 'YTID, start_seconds, end_seconds, \"labels\"', got {row!r}"
                )
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: start/end seconds are not numbers: {row!r}") from None
            ytid = row[0].strip()
            labels = tuple(label.strip() for label in row[3].split(",") if label.strip())
            if ytid in seen:
                duplicates += 1
                continue
            seen.add(ytid)
            segments.append(Segment(ytid, start, end, labels))
    if duplicates:
        warnings.warn(f"{path}: {duplicates} duplicate YouTube id(s) ignored (first row kept)", stacklevel=2)
    if not segments:
        raise ValueError(f"{path}: no segments found; is this an AudioSet segment CSV?")
    return segments


def index_audio_files(audio_dir: str | os.PathLike) -> dict[str, Path]:
    """Map file-name stems (up to the first dot) to paths for every candidate audio file below ``audio_dir``."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder not found: {audio_dir}")
    index: dict[str, Path] = {}
    stack = [audio_dir]
    while stack:  # os.scandir is much faster than Path.rglob on folders of millions of files
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)  # sorted: the same file wins on every run
            for entry in entries:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                    continue
                name = entry.name
                if name.startswith(".") or os.path.splitext(name)[1].lower() in _NOT_AUDIO:
                    continue
                index.setdefault(name.split(".", 1)[0], Path(entry.path))
    return index


def find_audio(index: dict[str, Path], ytid: str) -> Path | None:
    """The file of ``ytid``: ``<ytid>.*`` first, then ``Y<ytid>.*``; None when missing."""
    return index.get(ytid) or index.get("Y" + ytid)
