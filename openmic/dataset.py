"""OpenMIC-2018 (20 instruments, partially annotated): the sacred ingredient ``basedataset``.

Files (the original's layout, made by ``python -m openmic.prepare_scripts.download_preprocess``)::

    audioset_hdf5s/mp3/openmic_train.csv_mp3.hdf
    audioset_hdf5s/mp3/openmic_test.csv_mp3.hdf

with ``audio_name`` (``<sample_key>.mp3``), ``mp3`` (32 kHz mp3 bytes) and ``target``: float32
``[clips, 40]``, the 20 label values (OpenMIC's ``Y_true``, a relevance in [0, 1]) then the 20
masks (``Y_mask``: 1 where the label was annotated). Items are ``(waveform float32 [1, 10 s],
name, target float32 [40])``; :class:`helpers.training.tasks.MaskedMultiLabelTask` reads them.

Wavmix mixes two clips the OpenMIC way (:func:`mix_masked_targets`). The keys are described next
to their defaults, OpenMIC's in :func:`default_config`, the keys every dataset shares (decoding, augmentation) in :mod:`helpers.experiment.dataset_config`
(``python ex_openmic.py print_config``).
"""

# ruff: noqa: F841 -- sacred config scopes are functions whose "unused" locals are the config
from __future__ import annotations

import os

import numpy as np
from sacred import Ingredient
from torch.utils.data import Dataset

from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of
from helpers.data.hdf5_dataset import Hdf5AudioDataset, hdf5_class_names
from helpers.experiment.dataset_config import shared_dataset_config

dataset = Ingredient("basedataset")
dataset.configurations.append(shared_dataset_config(docs={
    "wavmix": "waveform mixup: labels masked by their own mask, mixed; masks merged by max"}))


@dataset.config
def default_config():
    """Defaults of the ``basedataset`` ingredient (the original's openmic/dataset.py and ex_openmic.py)."""
    name = "openmic2018"
    base_dir = "audioset_hdf5s/"  # folder of the HDF5 files
    openmic_train_hdf5 = os.path.join(base_dir, "mp3", "openmic_train.csv_mp3.hdf")
    openmic_test_hdf5 = os.path.join(base_dir, "mp3", "openmic_test.csv_mp3.hdf")
    n_classes = 20  # instruments; each target holds their 20 label values, then 20 masks


def prepare_command(hdf5_path: str | os.PathLike) -> str:
    """The command that creates the OpenMIC files (shown when one is missing)."""
    return (f"python -m openmic.prepare_scripts.download_preprocess --out-dir {os.path.dirname(os.fspath(hdf5_path))}"
            "  (see openmic/README.md)")


def mix_masked_targets(target1: np.ndarray, target2: np.ndarray, lam: float) -> np.ndarray:
    """Wavmix of two OpenMIC targets (labels then masks): each clip's labels count only where its mask
    is set; the labels are mixed with ``lam``, and a label is annotated if either clip annotates it."""
    n = target1.shape[-1] // 2
    mask1, mask2 = (target1[n:] > 0.5).astype(np.float32), (target2[n:] > 0.5).astype(np.float32)
    labels = lam * target1[:n] * mask1 + (1.0 - lam) * target2[:n] * mask2
    return np.concatenate([labels, np.maximum(mask1, mask2)]).astype(np.float32)


def open_file(path: str, n_classes: int, sample_rate: int, clip_length: float, strict_decoding: bool,
              corrupt_log: str | None) -> Hdf5AudioDataset:
    """One OpenMIC HDF5 file (``2 * n_classes`` float target values per clip)."""
    return Hdf5AudioDataset(path, clip_length=seconds_to_samples(clip_length, sample_rate), sample_rate=sample_rate,
                            n_classes=2 * n_classes, strict_decoding=strict_decoding,
                            prepare_hint=prepare_command(path), corrupt_log=corrupt_log)


@dataset.capture
def get_training_set(openmic_train_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log,
                     _config) -> Dataset:
    """The training clips with the configured augmentations (order: gain -> roll -> wavmix)."""
    ds = open_file(openmic_train_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log)
    return augment_training_set(ds, **augmentation_of(_config), mix_targets=mix_masked_targets)


@dataset.capture
def get_test_set(openmic_test_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log) -> Dataset:
    """The test clips, without augmentation."""
    return open_file(openmic_test_hdf5, n_classes, sample_rate, clip_length, strict_decoding, corrupt_log)


@dataset.capture
def class_names(openmic_train_hdf5) -> list[str] | None:
    """The instrument names the prepare script stored in the file (None for files made by the original's script)."""
    return hdf5_class_names(openmic_train_hdf5)
