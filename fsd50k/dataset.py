"""FSD50K (200 classes of the AudioSet ontology, clips of 0.3-30 s): the sacred ingredient ``basedataset``.

Files (the original's layout, made by ``python -m fsd50k.prepare_scripts.create_h5pymp3_dataset``)::

    audioset_hdf5s/mp3/FSD50K.train_mp3.hdf    the dev set's "train" clips
    audioset_hdf5s/mp3/FSD50K.val_mp3.hdf      the dev set's "val" clips (picks the best checkpoint)
    audioset_hdf5s/mp3/FSD50K.eval_mp3.hdf     the evaluation set

with ``audio_name`` (``<fname>.mp3``), ``mp3`` (whole clips, 32 kHz) and ``target``: packbits of
the 200 labels in ``vocabulary.csv`` order. Items are ``(waveform float32 [1, 10 s], name, target
float32 [200])``: longer clips are cut at a random offset (in training and, as in the original,
in evaluation too), shorter ones zero-padded; ``variable_eval=True`` gives the evaluation sets'
whole clips instead (the named config ``variable_eval`` also sets their batch size to 1). The
keys are described next to their defaults, FSD50K's in :func:`default_config`, the keys every dataset shares (decoding, augmentation) in :mod:`helpers.experiment.dataset_config`
(``python ex_fsd50k.py print_config``).
"""

# ruff: noqa: F841 -- sacred config scopes are functions whose "unused" locals are the config
from __future__ import annotations

import os

from sacred import Ingredient
from torch.utils.data import Dataset

from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of
from helpers.data.hdf5_dataset import Hdf5AudioDataset, hdf5_class_names
from helpers.experiment.dataset_config import shared_dataset_config

dataset = Ingredient("basedataset")
dataset.configurations.append(shared_dataset_config(docs={
    "clip_length": "seconds; longer clips: a random crop of this length, shorter: zero-padded"}))


@dataset.config
def default_config():
    """Defaults of the ``basedataset`` ingredient (the original's fsd50k/dataset.py and ex_fsd50k.py)."""
    name = "fsd50k"
    base_dir = "audioset_hdf5s/"  # folder of the HDF5 files
    balanced_train_hdf5 = os.path.join(base_dir, "mp3", "FSD50K.train_mp3.hdf")  # the training clips (original key name)
    valid_hdf5 = os.path.join(base_dir, "mp3", "FSD50K.val_mp3.hdf")  # validation: picks the best checkpoint (valid_*)
    eval_hdf5 = os.path.join(base_dir, "mp3", "FSD50K.eval_mp3.hdf")  # the evaluation set (metrics eval_*)
    n_classes = 200  # labels packed into each target
    variable_eval = False  # True: validation and evaluation on whole clips (needs batch size 1: `with variable_eval`)


def prepare_command(hdf5_path: str | os.PathLike) -> str:
    """The command that creates the FSD50K files (shown when one is missing)."""
    return (f"python -m fsd50k.prepare_scripts.create_h5pymp3_dataset <FSD50K folder> --out-dir "
            f"{os.path.dirname(os.fspath(hdf5_path))}  (see fsd50k/README.md)")


def open_file(path: str, n_classes: int, sample_rate: int, clip_length: float | None, strict_decoding: bool,
              corrupt_log: str | None) -> Hdf5AudioDataset:
    """One FSD50K HDF5 file; ``clip_length=None`` gives whole clips."""
    return Hdf5AudioDataset(path, clip_length=seconds_to_samples(clip_length, sample_rate), sample_rate=sample_rate,
                            n_classes=n_classes, strict_decoding=strict_decoding, prepare_hint=prepare_command(path),
                            corrupt_log=corrupt_log, random_crop=True)


@dataset.capture
def get_training_set(balanced_train_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log,
                     _config) -> Dataset:
    """The training clips with the configured augmentations (order: gain -> roll -> wavmix)."""
    ds = open_file(balanced_train_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log)
    return augment_training_set(ds, **augmentation_of(_config))


@dataset.capture
def get_valid_set(valid_hdf5, n_classes, sample_rate, clip_length, variable_eval, strict_decoding,
                  corrupt_log) -> Dataset:
    """The validation clips, without augmentation."""
    return open_file(valid_hdf5, n_classes, sample_rate, None if variable_eval else clip_length, strict_decoding,
                     corrupt_log)


@dataset.capture
def get_eval_set(eval_hdf5, n_classes, sample_rate, clip_length, variable_eval, strict_decoding,
                 corrupt_log) -> Dataset:
    """The evaluation clips, without augmentation."""
    return open_file(eval_hdf5, n_classes, sample_rate, None if variable_eval else clip_length, strict_decoding,
                     corrupt_log)


@dataset.capture
def class_names(balanced_train_hdf5) -> list[str] | None:
    """The vocabulary the prepare script stored in the file (None for files made by the original's scripts)."""
    return hdf5_class_names(balanced_train_hdf5)
