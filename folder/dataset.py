"""Your own audio: a folder of files and a CSV naming their labels, as the sacred ingredient ``basedataset``.

The CSV has a header and one row per clip::

    filename,label,split
    dog_barks_1.wav,dog,train
    street.mp3,"car,horn",test          # several labels in one (quoted) cell: multi-label

* ``filename``: a path relative to ``audio_dir``; any format FFmpeg reads, any sample rate
  (resampled to 32 kHz), stereo mixed down.
* ``label``: one label per clip (multi-class: cross-entropy and accuracy), or several separated by
  ``label_separator`` in any row (multi-label: BCE and mAP). The classes are the sorted labels of
  the CSV, or ``classes`` when given (which fixes their order; unknown labels are then an error).
  Their names are stored in every checkpoint.
* an optional ``split`` or ``fold`` column: the clips whose value is ``test_split`` (default
  ``test``, or fold 1) are evaluated, the others train. Without such a column, ``holdout`` (a
  share, drawn with ``split_seed``) is evaluated.

Every file is checked before training (it exists, and its header and first frame decode): the
first bad ones are reported by name; ``skip_bad_files=True`` leaves them out instead, listing and
counting them. Keys are described next to their defaults, the CSV's in :func:`default_config`,
the keys every dataset shares (decoding, augmentation) in :mod:`helpers.experiment.dataset_config` (``python ex_folder.py print_config``).
"""

# ruff: noqa: F841 -- sacred config scopes are functions whose "unused" locals are the config
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sacred import Ingredient
from torch.utils.data import Dataset

from helpers.data.audio_files import AudioFileDataset, unreadable_files
from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of
from helpers.experiment.dataset_config import shared_dataset_config
from helpers.training.tasks import MultiClassTask, MultiLabelTask, Task

_logger = logging.getLogger(__name__)

dataset = Ingredient("basedataset")
dataset.configurations.append(shared_dataset_config(wavmix=False))  # decoding and augmentation keys

#: how many bad files an error or a skip report names
SHOWN = 20


@dataset.config
def default_config():
    """Defaults of the ``basedataset`` ingredient for your own data."""
    name = "folder"
    audio_dir = "clips/"  # folder of the audio files (the CSV's file names are relative to it)
    csv = "labels.csv"  # one row per clip: file name, label(s), optionally a split or fold
    file_column = "filename"  # CSV column of the file names
    label_column = "label"  # CSV column of the labels
    label_separator = ","  # separates several labels in one cell (quote the cell): multi-label
    classes = None  # None: the sorted labels of the CSV; a list fixes the class names and their order
    multi_label = None  # None: multi-label (BCE, mAP) when a clip has several labels; else multi-class (CE, accuracy)
    split_column = None  # column saying which clips are evaluated; None: 'split' or 'fold' if the CSV has one
    test_split = None  # value of that column for the evaluation clips; None: 'test' ('split') or 1 ('fold')
    holdout = 0.2  # without such a column: share of the clips evaluated (drawn with split_seed)
    split_seed = 0  # seed of that draw
    skip_bad_files = False  # True: leave out missing or unreadable files (listed and counted) instead of stopping
    random_crop = False  # training: cut longer clips at a random offset (else: their start)


@dataclass(frozen=True)
class Table:
    """The CSV, read and checked: file paths, label lists, the evaluation flag, the classes."""

    paths: list[str]
    labels: list[list[str]]
    is_test: np.ndarray
    classes: list[str]
    multi_label: bool


def read_table(cfg: dict[str, Any]) -> Table:
    """The CSV of a ``basedataset`` config; errors name the file, the row and what was expected."""
    path = Path(cfg["csv"])
    if not path.is_file():
        raise FileNotFoundError(f"label CSV not found: {path} (absolute: {path.resolve()}); set basedataset.csv")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    for key in ("file_column", "label_column"):
        if cfg[key] not in columns:
            raise ValueError(f"{path}: no column {cfg[key]!r} (basedataset.{key}); its columns are {columns}")
    if not rows:
        raise ValueError(f"{path} lists no clips")
    labels = [[part.strip() for part in row[cfg["label_column"]].split(cfg["label_separator"]) if part.strip()]
              for row in rows]
    empty = [i + 2 for i, row_labels in enumerate(labels) if not row_labels]
    if empty:
        raise ValueError(f"{path}: rows {empty[:SHOWN]} have no label")
    classes = list(cfg["classes"]) if cfg["classes"] else sorted({label for row in labels for label in row})
    known = set(classes)
    for line, row_labels in enumerate(labels, start=2):
        unknown = [label for label in row_labels if label not in known]
        if unknown:
            raise ValueError(f"{path}:{line}: labels {unknown} are not classes of this config; expected one of "
                             f"{classes} (basedataset.classes)")
    multi_label = cfg["multi_label"] if cfg["multi_label"] is not None else any(len(r) > 1 for r in labels)
    if not multi_label and any(len(r) > 1 for r in labels):
        raise ValueError(f"{path}: some clips have several labels but basedataset.multi_label=False")
    audio_dir = Path(cfg["audio_dir"])
    paths = [os.fspath(audio_dir / row[cfg["file_column"]]) for row in rows]
    return Table(paths, labels, _test_rows(cfg, rows, columns, path), classes, bool(multi_label))


def _test_rows(cfg: dict[str, Any], rows: list[dict], columns: list[str], path: Path) -> np.ndarray:
    """Which rows are evaluated: by the split or fold column, else a seeded share."""
    column = cfg["split_column"] or next((c for c in ("split", "fold") if c in columns), None)
    if column is None:
        if not 0 < cfg["holdout"] < 1:
            raise ValueError(f"basedataset.holdout={cfg['holdout']}: expected a share between 0 and 1")
        rng = np.random.default_rng(cfg["split_seed"])
        n_test = max(1, round(cfg["holdout"] * len(rows)))
        is_test = np.zeros(len(rows), dtype=bool)
        is_test[rng.permutation(len(rows))[:n_test]] = True
        return is_test
    if column not in columns:
        raise ValueError(f"{path}: no column {column!r} (basedataset.split_column); its columns are {columns}")
    values = [row[column].strip() for row in rows]
    test = str(cfg["test_split"] if cfg["test_split"] is not None else ("1" if column == "fold" else "test"))
    if test not in values:
        raise ValueError(f"{path}: no clip has {column}={test!r} (basedataset.test_split); the column holds "
                         f"{sorted(set(values))}")
    return np.asarray([v == test for v in values])


def _targets(table: Table, rows: np.ndarray) -> np.ndarray:
    index = {name: i for i, name in enumerate(table.classes)}
    targets = np.zeros((len(rows), len(table.classes)), dtype=np.float32)
    for i, row in enumerate(rows):
        targets[i, [index[label] for label in table.labels[row]]] = 1.0
    return targets


def check_files(table: Table, rows: np.ndarray, skip_bad_files: bool) -> np.ndarray:
    """``rows`` whose file is readable; bad files are an error naming them, or skipped with a report."""
    bad = dict(unreadable_files([table.paths[r] for r in rows]))
    if not bad:
        return rows
    listing = "\n".join(f"  {path}: {reason}" for path, reason in list(bad.items())[:SHOWN])
    more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    if not skip_bad_files:
        raise FileNotFoundError(f"{len(bad)} of {len(rows)} files named in the CSV cannot be used:\n{listing}{more}\n"
                                "Fix them, or set basedataset.skip_bad_files=True to leave them out.")
    _logger.warning("skipping %d of %d files named in the CSV (basedataset.skip_bad_files=True):\n%s%s",
                    len(bad), len(rows), listing, more)
    return np.asarray([r for r in rows if table.paths[r] not in bad], dtype=np.int64)


def build_set(cfg: dict[str, Any], train: bool) -> Dataset:
    """The training (augmented) or evaluation clips of a ``basedataset`` config."""
    table = read_table(cfg)
    rows = check_files(table, np.flatnonzero(table.is_test != train), cfg["skip_bad_files"])
    if len(rows) == 0:
        raise ValueError(f"{cfg['csv']}: no {'training' if train else 'evaluation'} clips are left")
    ds = AudioFileDataset([table.paths[r] for r in rows], _targets(table, rows),
                          names=[os.path.relpath(table.paths[r], cfg["audio_dir"]) for r in rows],
                          clip_length=seconds_to_samples(cfg["clip_length"], cfg["sample_rate"]),
                          sample_rate=cfg["sample_rate"], random_crop=train and cfg["random_crop"],
                          strict_decoding=cfg["strict_decoding"], corrupt_log=cfg["corrupt_log"])
    if not train:
        return ds
    return augment_training_set(ds, **augmentation_of(cfg))


@dataset.capture
def get_training_set(_config) -> Dataset:
    """The training clips, with the configured augmentations."""
    return build_set(_config, train=True)


@dataset.capture
def get_test_set(_config) -> Dataset:
    """The evaluation clips, without augmentation."""
    return build_set(_config, train=False)


@dataset.capture
def class_names(_config) -> list[str]:
    """The class names, in output order (stored in checkpoints)."""
    return read_table(_config).classes


@dataset.capture
def get_task(_config) -> Task:
    """Multi-label (BCE, mAP) or multi-class (cross-entropy, accuracy), as the CSV says."""
    return MultiLabelTask() if read_table(_config).multi_label else MultiClassTask()
