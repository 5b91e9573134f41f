"""ESC-50 (2000 clips of 5 s, 50 classes, 5 folds): the sacred ingredient ``basedataset``.

Layout (the original's resampled release ``esc50.zip``, or what
``python -m esc50.prepare_scripts.download_preprocess`` makes from ESC-50's GitHub zip)::

    audioset_hdf5s/esc50/meta/esc50.csv      filename,fold,target,category,esc10,src_file,take
    audioset_hdf5s/esc50/audio_32k/*.wav     the clips at 32 kHz

``basedataset.fold`` is the test fold; the four others train. Items are ``(waveform float32
[1, 5 s], filename, one-hot target float32 [50])``: one-hot targets let wavmix and batch mixup
mix them, and the cross-entropy of the mixed targets is the original's mixed loss. The keys are
described next to their defaults, ESC-50's in :func:`default_config`, the keys every dataset shares (decoding, augmentation) in :mod:`helpers.experiment.dataset_config`
(``python ex_esc50.py print_config``).
"""

# ruff: noqa: F841 -- sacred config scopes are functions whose "unused" locals are the config
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sacred import Ingredient
from torch.utils.data import Dataset

from helpers.data.audio_files import AudioFileDataset
from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of
from helpers.experiment.dataset_config import shared_dataset_config

dataset = Ingredient("basedataset")
dataset.configurations.append(shared_dataset_config(clip_length=5, wavmix=False))

PREPARE_COMMAND = "python -m esc50.prepare_scripts.download_preprocess --out-dir <base_dir>  (see esc50/README.md)"


@dataset.config
def default_config():
    """Defaults of the ``basedataset`` ingredient (the original's esc50/dataset.py)."""
    name = "esc50"
    base_dir = "audioset_hdf5s/esc50/"  # the ESC-50 folder (meta/ and audio_32k/)
    meta_csv = os.path.join(base_dir, "meta", "esc50.csv")  # ESC-50's metadata: filename, fold, target, category, ...
    audio_path = os.path.join(base_dir, "audio_32k/")  # the clips at 32 kHz, named as in meta_csv
    fold = 1  # the test fold (1-5); the four other folds train
    n_classes = 50  # targets are class indices 0..n_classes-1 in meta_csv


@dataclass(frozen=True)
class Clip:
    """One row of ``esc50.csv``."""

    filename: str
    fold: int
    target: int
    category: str


def read_meta(meta_csv: str | os.PathLike, n_classes: int | None = None) -> list[Clip]:
    """The rows of ``meta_csv`` (targets checked against ``n_classes`` when given); errors name the file,
    the row and what was expected."""
    path = Path(meta_csv)
    if not path.is_file():
        raise FileNotFoundError(f"ESC-50 metadata not found: {path} (absolute: {path.resolve()}). Create the "
                                f"dataset with:\n    {PREPARE_COMMAND}\nor set basedataset.base_dir to its folder.")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"filename", "fold", "target"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: columns {sorted(missing)} missing; expected ESC-50's header "
                             "filename,fold,target,category,...")
        clips = []
        for line, row in enumerate(reader, start=2):
            try:
                clip = Clip(row["filename"], int(row["fold"]), int(row["target"]), row.get("category") or "")
            except ValueError:
                raise ValueError(f"{path}:{line}: fold and target must be whole numbers, got {row}") from None
            if n_classes is not None and not 0 <= clip.target < n_classes:
                raise ValueError(f"{path}:{line}: target {clip.target} is not a class this config knows: expected "
                                 f"0..{n_classes - 1} (basedataset.n_classes={n_classes})")
            clips.append(clip)
    return clips


def fold_clips(meta_csv: str | os.PathLike, n_classes: int, fold: int, train: bool) -> list[Clip]:
    """The training clips (every fold but ``fold``) or the test clips (``fold``)."""
    clips = read_meta(meta_csv, n_classes)
    folds = sorted({c.fold for c in clips})
    if fold not in folds:
        raise ValueError(f"basedataset.fold={fold} is not a fold of {meta_csv}: expected one of "
                         f"{', '.join(map(str, folds))} (the test fold; the others train)")
    return [c for c in clips if (c.fold != fold) == train]


def build_set(clips: list[Clip], audio_path: str, n_classes: int, sample_rate: int, clip_length: float,
              strict_decoding: bool = False, corrupt_log: str | None = None) -> Dataset:
    """The clips as an :class:`~helpers.data.audio_files.AudioFileDataset` with one-hot targets."""
    targets = np.eye(n_classes, dtype=np.float32)[[c.target for c in clips]]
    return AudioFileDataset([os.path.join(audio_path, c.filename) for c in clips], targets,
                            names=[c.filename for c in clips], clip_length=seconds_to_samples(clip_length, sample_rate),
                            sample_rate=sample_rate, missing_hint=f"Create the dataset with:\n    {PREPARE_COMMAND}",
                            strict_decoding=strict_decoding, corrupt_log=corrupt_log)


@dataset.capture
def get_training_set(meta_csv, audio_path, fold, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log,
                     _config) -> Dataset:
    """The four training folds, with the configured augmentations."""
    ds = build_set(fold_clips(meta_csv, n_classes, fold, train=True), audio_path, n_classes, sample_rate, clip_length,
                   strict_decoding, corrupt_log)
    return augment_training_set(ds, **augmentation_of(_config))  # one-hot targets mixed like the waveforms


@dataset.capture
def get_test_set(meta_csv, audio_path, fold, n_classes, sample_rate, clip_length, strict_decoding,
                 corrupt_log) -> Dataset:
    """The test fold, without augmentation."""
    return build_set(fold_clips(meta_csv, n_classes, fold, train=False), audio_path, n_classes, sample_rate,
                     clip_length, strict_decoding, corrupt_log)


@dataset.capture
def class_names(meta_csv, n_classes) -> list[str]:
    """The ``category`` of every class index (stored in checkpoints)."""
    names = [f"class_{i}" for i in range(n_classes)]
    for clip in read_meta(meta_csv, n_classes):
        names[clip.target] = clip.category or names[clip.target]
    return names
