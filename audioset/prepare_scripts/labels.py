"""The AudioSet label list (``class_labels_indices.csv``): reading it and fetching it into the cache.

The official file has a header ``index,mid,display_name`` and one row per class, e.g.
``0,/m/09x0r,"Speech"``: the prepare scripts read the MIDs, ``inference.py`` the display names. When no path is given, the file is looked up in (and downloaded to)
``<torch.hub.get_dir()>/audioset/class_labels_indices.csv`` -- next to the ``checkpoints/``
folder where pretrained weights go, i.e. ``~/.cache/torch/hub/audioset/`` unless ``TORCH_HOME``
is set.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from helpers.data.download import download

__all__ = ["LABELS_URL", "labels_cache_path", "read_label_table", "read_labels", "read_display_names",
           "ensure_labels_csv"]

LABELS_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
LABELS_FILENAME = "class_labels_indices.csv"


def labels_cache_path() -> Path:
    """Where the label list is cached: ``<torch.hub.get_dir()>/audioset/class_labels_indices.csv``."""
    import torch.hub  # imported here: the rest of the prepare scripts do not need torch

    return Path(torch.hub.get_dir()) / "audioset" / LABELS_FILENAME


def read_label_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(mid, display_name)`` of every class in index order, from a ``index,mid,display_name`` CSV.

    Raises:
        ValueError: naming the file when the header or the indices are wrong.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["index", "mid"]:
        raise ValueError(
            f"{path}: not an AudioSet label list; expected a header 'index,mid,display_name' "
            f"(the official file is {LABELS_URL})"
        )
    table: list[tuple[str, str]] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            index = int(row[0])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{line_no}: bad row {row!r}; expected 'index,mid,display_name'") from None
        if index != len(table) or len(row) < 2 or not row[1].strip():
            raise ValueError(f"{path}:{line_no}: expected index {len(table)} followed by a MID, got {row!r}")
        mid = row[1].strip()
        table.append((mid, row[2].strip() if len(row) > 2 and row[2].strip() else mid))
    if not table:
        raise ValueError(f"{path}: the label list is empty")
    if len({mid for mid, _ in table}) != len(table):
        raise ValueError(f"{path}: the label list has duplicate MIDs")
    return table


def read_labels(path: str | os.PathLike) -> list[str]:
    """The label MIDs in index order (see :func:`read_label_table`)."""
    return [mid for mid, _ in read_label_table(path)]


def read_display_names(path: str | os.PathLike) -> list[str]:
    """The classes' display names in index order, e.g. ``"Speech"`` (the MID where a row has none)."""
    return [name for _, name in read_label_table(path)]


def ensure_labels_csv(path: str | os.PathLike | None = None) -> Path:
    """Return a usable label list: ``path`` if given, else the cached copy, downloading it if needed.

    Raises:
        FileNotFoundError: ``path`` was given but does not exist.
        RuntimeError: the download failed (e.g. offline); the message names the URL and where to
            put the file by hand.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"label list not found: {path} (the official file is {LABELS_URL})")
        return path
    cached = labels_cache_path()
    if cached.is_file():
        return cached
    download(LABELS_URL, cached, "the AudioSet label list",
             offline_hint=" (or pass --labels /path/to/class_labels_indices.csv)")
    read_labels(cached)  # fail now, not halfway through, if the download is not the label list
    return cached
