"""Your own audio as the sacred ingredient ``basedataset``: a folder of files and their labels, in
the layouts people already have.

Where the labels come from (``basedataset.audio_dir`` is the folder):

1. ``csv``: a CSV with a header and one row per clip (file names relative to ``audio_dir``)::

       filename,label,split
       dog_barks_1.wav,dog,train
       street.mp3,"car,horn",test          # several labels in one (quoted) cell: multi-label

2. without ``csv``, Hugging Face's ``audiofolder`` metadata: ``audio_dir/metadata.csv`` (its
   ``file_name`` column relative to ``audio_dir``, e.g. ``train/1.wav``), or one ``metadata.csv``
   in each split folder (``audio_dir/train/metadata.csv``, ``audio_dir/test/metadata.csv``);
3. without either, one folder per class (GTZAN's ``genres/blues/blues.00000.wav``, torchvision's
   ``ImageFolder``, ``audiofolder`` without metadata): the label of a file is the name of its
   folder right under ``audio_dir``, or under a split folder (``audio_dir/train/dog/1.wav``).

* files: any format FFmpeg reads, any sample rate (resampled to 32 kHz), stereo mixed down.
* labels: one per clip (multi-class: cross-entropy and accuracy), or several separated by
  ``label_separator`` in any row (multi-label: BCE and mAP). The classes are the sorted labels,
  or ``classes`` when given (which fixes their order; unknown labels are then an error). Their
  names are stored in every checkpoint.
* which clips are evaluated: a ``split`` or ``fold`` column, or split folders (``train/``,
  ``test/``, ``validation/``, ...): the clips of ``test_split`` (default ``test``, else the
  validation split, or fold 1) are evaluated, other evaluation splits (``validation`` when
  ``test`` is evaluated) are left out, the rest train. Without a split, ``holdout`` (a share,
  drawn with ``split_seed``) is evaluated.

Before training, classes with very few clips and class names that look like typos of each other
(``Dgo`` among ``Dog``) are warned about. Every file is checked (it exists, and its header and
first frame decode): the first bad ones are reported by name; ``skip_bad_files=True`` leaves them
out instead, listing and counting them. Keys are described next to their defaults, the layout's
in :func:`default_config`, the keys every dataset shares (decoding, augmentation) in
:mod:`helpers.experiment.dataset_config` (``python ex_folder.py print_config``).
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

from helpers.data.audio_files import AudioFileDataset, audio_files_under, unreadable_files
from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of
from helpers.data.label_checks import label_warnings
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
    audio_dir = "clips/"  # folder of the audio files (file names in a CSV are relative to it)
    csv = None  # one row per clip: file name, label(s), optionally a split or fold; None: audio_dir's metadata.csv (Hugging Face audiofolder), else one folder per class
    file_column = None  # CSV column of the file names; None: 'filename', or 'file_name' (audiofolder)
    label_column = "label"  # CSV column of the labels
    label_separator = ","  # separates several labels in one cell (quote the cell): multi-label
    classes = None  # None: the sorted labels of the data; a list fixes the class names and their order
    multi_label = None  # None: multi-label (BCE, mAP) when a clip has several labels; else multi-class (CE, accuracy)
    split_column = None  # column saying which clips are evaluated; None: 'split' or 'fold' if the CSV has one (or split folders: train/, test/, ...)
    test_split = None  # the split evaluated; None: 'test' (else the validation split), or 1 for a 'fold' column
    holdout = 0.2  # without a split: share of the clips evaluated (drawn with split_seed)
    split_seed = 0  # seed of that draw
    skip_bad_files = False  # True: leave out missing or unreadable files (listed and counted) instead of stopping
    random_crop = False  # training: cut longer clips at a random offset (else: their start)


#: split names (of a split column or split folder) that train; the other known ones are evaluation splits
TRAIN_SPLITS = ("train", "training")
#: evaluation splits, in the order the evaluated one is picked when ``test_split`` is None
EVAL_SPLITS = ("test", "testing", "eval", "evaluation", "validation", "valid", "val", "dev")
#: the metadata file of Hugging Face's audiofolder layout
METADATA_CSV = "metadata.csv"


@dataclass(frozen=True)
class Table:
    """The clips and their labels, read and checked: file paths, label lists, the evaluation flag,
    the classes; ``kept``: False for the clips of an evaluation split that is not the evaluated one;
    ``source``: where the labels came from (for messages)."""

    paths: list[str]
    labels: list[list[str]]
    is_test: np.ndarray
    classes: list[str]
    multi_label: bool
    kept: np.ndarray | None = None
    source: str = ""

    def rows(self, train: bool) -> np.ndarray:
        """Indices of the training (or evaluation) clips."""
        kept = self.kept if self.kept is not None else np.ones(len(self.paths), dtype=bool)
        return np.flatnonzero((self.is_test != train) & kept)


@dataclass(frozen=True)
class _Clips:
    """What a layout gives: file names relative to ``audio_dir``, their labels, their split (or None)."""

    files: list[str]
    labels: list[list[str]]
    splits: list[str] | None
    split_name: str  # what the splits are (a column name, or "split folder"), for messages
    source: str


def read_table(cfg: dict[str, Any]) -> Table:
    """The clips of a ``basedataset`` config, in whichever layout it has; errors name the file, the
    row (or folder) and what was expected."""
    clips = _read_layout(cfg)
    labels = clips.labels
    classes = list(cfg["classes"]) if cfg["classes"] else sorted({label for row in labels for label in row})
    known = set(classes)
    for i, row_labels in enumerate(labels):
        unknown = [label for label in row_labels if label not in known]
        if unknown:
            raise ValueError(f"{_where(clips, i)}: labels {unknown} are not classes of this config; expected one of "
                             f"{classes} (basedataset.classes)")
    multi_label = cfg["multi_label"] if cfg["multi_label"] is not None else any(len(r) > 1 for r in labels)
    if not multi_label and any(len(r) > 1 for r in labels):
        raise ValueError(f"{clips.source}: some clips have several labels but basedataset.multi_label=False")
    audio_dir = Path(cfg["audio_dir"])
    is_test, kept = _test_rows(cfg, clips)
    return Table([os.fspath(audio_dir / f) for f in clips.files], labels, is_test, classes, bool(multi_label),
                 kept, clips.source)


def _where(clips: _Clips, i: int) -> str:
    """Where clip ``i`` comes from: a CSV line, or its file (folder layouts)."""
    return f"{clips.source}:{i + 2}" if clips.source.endswith(".csv") else clips.files[i]


def _read_layout(cfg: dict[str, Any]) -> _Clips:
    """The clips of ``csv``, of the audiofolder metadata, or of the class folders (module docstring)."""
    audio_dir = Path(cfg["audio_dir"])
    if cfg["csv"]:
        path = Path(cfg["csv"])
        if not path.is_file():
            raise FileNotFoundError(f"label CSV not found: {path} (absolute: {path.resolve()}); set basedataset.csv")
        return _read_csv(path, cfg)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder not found: {audio_dir} (absolute: {audio_dir.resolve()}); set "
                                f"basedataset.audio_dir")
    if (audio_dir / METADATA_CSV).is_file():
        return _read_csv(audio_dir / METADATA_CSV, cfg, split_from_folders=True)
    split_csvs = sorted(p for p in audio_dir.glob(f"*/{METADATA_CSV}") if _split_name(p.parent.name))
    if split_csvs:
        parts = [_read_csv(p, cfg, prefix=p.parent.name) for p in split_csvs]
        return _Clips([f for c in parts for f in c.files], [x for c in parts for x in c.labels],
                      [p.parent.name for p, c in zip(split_csvs, parts, strict=True) for _ in c.files],
                      "split folder", os.path.join(audio_dir, "*", METADATA_CSV))
    return _read_class_folders(audio_dir)


def _split_name(name: str) -> bool:
    return name.lower() in TRAIN_SPLITS + EVAL_SPLITS


def _read_csv(path: Path, cfg: dict[str, Any], prefix: str = "", split_from_folders: bool = False) -> _Clips:
    """One CSV: file names (``prefix``/ them: a split folder's metadata), labels, and the split column,
    or, for ``audiofolder``'s top ``metadata.csv`` without one, the split folder in the file names."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    file_column = cfg["file_column"] or next((c for c in ("filename", "file_name") if c in columns), "filename")
    for key, column in (("file_column", file_column), ("label_column", cfg["label_column"])):
        if column not in columns:
            raise ValueError(f"{path}: no column {column!r} (basedataset.{key}); its columns are {columns}")
    if not rows:
        raise ValueError(f"{path} lists no clips")
    labels = [[part.strip() for part in row[cfg["label_column"]].split(cfg["label_separator"]) if part.strip()]
              for row in rows]
    empty = [i + 2 for i, row_labels in enumerate(labels) if not row_labels]
    if empty:
        raise ValueError(f"{path}: rows {empty[:SHOWN]} have no label")
    files = [os.path.join(prefix, row[file_column]) if prefix else row[file_column] for row in rows]
    column = cfg["split_column"] or next((c for c in ("split", "fold") if c in columns), None)
    if column is not None:
        if column not in columns:
            raise ValueError(f"{path}: no column {column!r} (basedataset.split_column); its columns are {columns}")
        return _Clips(files, labels, [row[column].strip() for row in rows], column, str(path))
    if split_from_folders:
        tops = [Path(f).parts[0] if len(Path(f).parts) > 1 else "" for f in files]
        if all(_split_name(t) for t in tops):
            return _Clips(files, labels, tops, "split folder", str(path))
    return _Clips(files, labels, None, "", str(path))


def _read_class_folders(audio_dir: Path) -> _Clips:
    """One folder per class, optionally inside split folders: ``genres/blues/x.wav``, ``data/train/dog/1.wav``."""
    files = [p.relative_to(audio_dir) for p in audio_files_under(audio_dir)]
    if not files:
        raise FileNotFoundError(f"no audio files in {audio_dir}; set basedataset.audio_dir to the folder of your clips "
                                f"(one folder per class), or basedataset.csv to a CSV naming them")
    split_folders = all(len(f.parts) > 2 and _split_name(f.parts[0]) for f in files)
    depth = 1 if split_folders else 0
    loose = [os.fspath(f) for f in files if len(f.parts) <= depth + 1]
    if loose:
        raise ValueError(f"{audio_dir}: no basedataset.csv, no {METADATA_CSV}, and {len(loose)} audio files are not in "
                         f"a class folder (e.g. {loose[0]}). Put each clip into a folder named after its class "
                         f"({audio_dir}/<class>/<clip>), or name their labels in a CSV (basedataset.csv).")
    return _Clips([os.fspath(f) for f in files], [[f.parts[depth]] for f in files],
                  [f.parts[0] for f in files] if split_folders else None, "split folder",
                  f"the class folders of {audio_dir}")


def _test_rows(cfg: dict[str, Any], clips: _Clips) -> tuple[np.ndarray, np.ndarray]:
    """Which clips are evaluated, and which are used at all: by the split (column or folders), else a seeded share."""
    n = len(clips.files)
    if clips.splits is None:
        if not 0 < cfg["holdout"] < 1:
            raise ValueError(f"basedataset.holdout={cfg['holdout']}: expected a share between 0 and 1")
        rng = np.random.default_rng(cfg["split_seed"])
        n_test = max(1, round(cfg["holdout"] * n))
        is_test = np.zeros(n, dtype=bool)
        is_test[rng.permutation(n)[:n_test]] = True
        return is_test, np.ones(n, dtype=bool)
    values = clips.splits
    present = sorted(set(values))
    if cfg["test_split"] is not None:
        test = str(cfg["test_split"])
    elif clips.split_name == "fold":
        test = "1"
    else:
        test = next((name for name in EVAL_SPLITS for v in present if v.lower() == name), "test")
    if test not in values:
        raise ValueError(f"{clips.source}: no clip has {clips.split_name}={test!r} (basedataset.test_split); there "
                         f"are {present}")
    is_test = np.asarray([v == test for v in values])
    # another evaluation split (validation when test is evaluated) neither trains nor is evaluated
    kept = np.asarray([v == test or v.lower() not in EVAL_SPLITS for v in values])
    return is_test, kept


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
        raise FileNotFoundError(f"{len(bad)} of {len(rows)} files of {table.source} cannot be used:\n{listing}{more}\n"
                                "Fix them, or set basedataset.skip_bad_files=True to leave them out.")
    _logger.warning("skipping %d of %d files of %s (basedataset.skip_bad_files=True):\n%s%s",
                    len(bad), len(rows), table.source, listing, more)
    return np.asarray([r for r in rows if table.paths[r] not in bad], dtype=np.int64)


def warn_about_labels(table: Table, explicit_classes: bool) -> None:
    """Log classes with very few clips and names that look like typos, before training."""
    used = np.flatnonzero(table.kept if table.kept is not None else np.ones(len(table.paths), dtype=bool))
    found = label_warnings([table.labels[r] for r in used], table.classes, table.is_test[used],
                           check_names=not explicit_classes)
    if found:
        _logger.warning("the labels of %s may hold mistakes:\n%s\nFix the labels, or, where they are right, go on "
                        "(basedataset.classes=[...] lists the classes on purpose and silences the name check).",
                        table.source, "\n".join(f"  {line}" for line in found))


def build_set(cfg: dict[str, Any], train: bool) -> Dataset:
    """The training (augmented) or evaluation clips of a ``basedataset`` config."""
    table = read_table(cfg)
    if train:
        if table.kept is not None and not table.kept.all():
            _logger.info("%d clips of %s are left out: they belong to another evaluation split than the one "
                         "evaluated (basedataset.test_split)", int((~table.kept).sum()), table.source)
        warn_about_labels(table, explicit_classes=bool(cfg["classes"]))
    rows = check_files(table, table.rows(train), cfg["skip_bad_files"])
    if len(rows) == 0:
        raise ValueError(f"{table.source}: no {'training' if train else 'evaluation'} clips are left")
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
