"""The class names of the label sets in :data:`models.registry.LABEL_SETS`: reading their files and
fetching them into the cache.

* AudioSet: ``class_labels_indices.csv``, a header ``index,mid,display_name`` and one row per
  class, e.g. ``0,/m/09x0r,"Speech"``: the AudioSet prepare script reads the MIDs
  (:func:`read_labels`), tagging the display names (:func:`read_display_names`);
* FSD50K: ``vocabulary.csv`` of its ground truth, rows ``index,name,mid`` without a header
  (:func:`read_vocabulary`, also what the FSD50K prepare script packs the targets by);
* OpenMIC-2018: the 20 instruments, listed in the registry.

A file fetched by :func:`label_file` lives under ``torch.hub.get_dir()`` (``~/.cache/torch/hub``
unless ``TORCH_HOME`` is set), next to the ``checkpoints/`` folder of the released weights:
``audioset/class_labels_indices.csv``, ``fsd50k/vocabulary.csv``. Offline, the error names the
URL and where to put the file. Torch is imported only to find that folder and download.
"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

from models.hub_cache import cached_download, hub_dir
from models.registry import LABEL_SETS, LabelSet

__all__ = ["class_names", "label_file", "labels_cache_path", "ensure_labels_csv", "read_label_table", "read_labels",
           "read_display_names", "read_vocabulary", "AUDIOSET_LABELS_URL"]

AUDIOSET_LABELS_URL = LABEL_SETS["audioset"].url


def labels_cache_path(label_set: str = "audioset") -> Path:
    """Where the file of ``label_set`` is cached (AudioSet: ``<torch hub>/audioset/class_labels_indices.csv``)."""
    return hub_dir() / LABEL_SETS[label_set].cache_file


# ------------------------------------------------------------------------------------ reading
def read_label_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(mid, display_name)`` of every class in index order, from an AudioSet ``index,mid,display_name`` CSV.

    Raises:
        ValueError: naming the file when the header or the indices are wrong.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["index", "mid"]:
        raise ValueError(
            f"{path}: not an AudioSet label list; expected a header 'index,mid,display_name' "
            f"(the official file is {AUDIOSET_LABELS_URL})"
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
    """The AudioSet label MIDs in index order (see :func:`read_label_table`)."""
    return [mid for mid, _ in read_label_table(path)]


def read_display_names(path: str | os.PathLike) -> list[str]:
    """The AudioSet classes' display names in index order, e.g. ``"Speech"`` (the MID where a row has none)."""
    return [name for _, name in read_label_table(path)]


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """FSD50K's class names in index order from ``vocabulary.csv`` (rows ``index,name,mid``, no header)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row]
    names = []
    for line, row in enumerate(rows, start=1):
        if len(row) < 2 or row[0].strip() != str(len(names)):
            raise ValueError(f"{path}:{line}: expected 'index,name,mid' with index {len(names)}, got {row}")
        names.append(row[1].strip())
    return names


_READERS = {"audioset_csv": read_display_names, "fsd50k_vocabulary": read_vocabulary}


# ----------------------------------------------------------------------------------- fetching
def label_file(label_set: str, path: str | os.PathLike | None = None) -> Path:
    """The file of ``label_set``: ``path`` if given, else the cached copy, fetched when missing.

    Raises:
        FileNotFoundError: ``path`` was given but does not exist.
        RuntimeError: the download failed (e.g. offline); names the URL and where to put the file.
    """
    entry = LABEL_SETS[label_set]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"label list not found: {path} (the official file is {entry.url})")
        return path
    cached = labels_cache_path(label_set)
    if cached.is_file():
        return cached
    hint = " (or pass --labels FILE)"
    if not entry.member:
        cached_download(entry.url, f"the {entry.name} label list", cached, offline_hint=hint)
    else:
        archive = cached_download(entry.url, f"the {entry.name} label list (in {entry.member})",
                                  cached.with_name(entry.url.rsplit("/", 1)[-1].split("?")[0]),
                                  offline_hint=f"; or put {Path(entry.member).name} itself at {cached}{hint}")
        _unpack_member(archive, entry, cached)
    _READERS[entry.file_format](cached)  # fail now, not halfway through, if the download is not the label list
    return cached


def _unpack_member(archive: Path, entry: LabelSet, target: Path) -> None:
    """``entry.member`` of the zip ``archive`` written to ``target`` (through a temporary name), the zip removed."""
    with zipfile.ZipFile(archive) as zf:
        try:
            data = zf.read(entry.member)
        except KeyError:
            raise ValueError(f"{archive} holds no {entry.member}; delete it and run again to download it again") from None
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    archive.unlink()


def _check(entry: LabelSet, path: Path) -> list[str]:
    names = _READERS[entry.file_format](path)
    if len(names) != entry.n_classes:
        raise ValueError(f"{path} names {len(names)} classes; {entry.description} are {entry.n_classes}")
    return names


def ensure_labels_csv(path: str | os.PathLike | None = None) -> Path:
    """AudioSet's label list: ``path`` if given, else the cached copy, downloading it if needed."""
    return label_file("audioset", path)


def class_names(label_set: str) -> list[str]:
    """The class names of ``label_set`` (a :data:`models.registry.LABEL_SETS` key), fetched when needed."""
    entry = LABEL_SETS[label_set]
    if entry.names:
        return list(entry.names)
    return _check(entry, label_file(label_set))
