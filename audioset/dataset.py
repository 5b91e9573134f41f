"""AudioSet datasets and sampler: the sacred ingredient ``basedataset`` plus plain constructors.

Sacred use (the experiment adds the ingredient and calls the captured functions in its run)::

    from audioset.dataset import dataset as basedataset_ingredient, get_training_set, get_test_set, \
        get_ft_weighted_sampler
    ex = Experiment("audioset", ingredients=[basedataset_ingredient])
    # inside a captured function of a run:
    train_set = get_training_set()            # balanced (+ unbalanced when use_full_set=True)
    sampler = get_ft_weighted_sampler(seed)   # importance sampling over that set, DDP-aware
    test_set = get_test_set()                 # eval segments, no augmentation
    # command line: python ex_audioset.py with basedataset.base_dir=/data/audioset_hdf5s/

The ``basedataset`` keys (original names kept) are described next to their defaults: AudioSet's
files in :func:`default_config`, the keys every dataset shares (decoding, augmentation) in :mod:`helpers.experiment.dataset_config`; ``python ex_audioset.py print_config`` shows them.

Captured functions: :func:`get_training_set`, :func:`get_base_training_set` (balanced only,
whatever ``use_full_set`` says), :func:`get_test_set`, :func:`get_ft_weighted_sampler`,
:func:`hdf5_files`.

Without sacred: :func:`build_training_set`, :func:`build_test_set`, :func:`build_weighted_sampler`
take the same settings as keyword arguments.

Items are ``(waveform float32 [1, clip_length * sample_rate], audio_name, target float32 [527])``;
the default collate turns a batch into ``(tensor [B, 1, T], list of names, tensor [B, 527])``.
When the sampler is used with PyTorch Lightning DDP, give the Trainer
``use_distributed_sampler=False`` (the sampler already splits the draws among ranks).
"""

# ruff: noqa: F841 -- sacred config scopes are functions whose "unused" locals are the config
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sacred import Ingredient
from torch.utils.data import Dataset

from helpers.data.audio_io import seconds_to_samples
from helpers.data.augment import augment_training_set, augmentation_of, concat_datasets
from helpers.data.hdf5_dataset import Hdf5AudioDataset
from helpers.data.sampler import DistributedSamplerWrapper, make_weighted_sampler, sample_weights_from_hdf5
from helpers.experiment.dataset_config import shared_dataset_config

__all__ = [
    "dataset",
    "default_config",
    "get_base_training_set",
    "get_training_set",
    "get_test_set",
    "get_ft_weighted_sampler",
    "hdf5_files",
    "build_training_set",
    "build_test_set",
    "build_weighted_sampler",
    "prepare_command",
]

dataset = Ingredient("basedataset")
dataset.configurations.append(shared_dataset_config())  # decoding and augmentation keys

# The official segment list each of our HDF5 files is made from (for "how to create it" hints).
_SEGMENT_CSVS = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}


# Sacred reads the local variables of this function as the config (hence ruff's F841 is off);
# the trailing comments are what `print_config` shows next to each key.
@dataset.config
def default_config():
    """Defaults of the ``basedataset`` ingredient (see the module docstring of audioset/dataset.py)."""
    name = "audioset"
    base_dir = "audioset_hdf5s/"  # folder of the three HDF5 files
    balanced_train_hdf5 = os.path.join(base_dir, "mp3", "balanced_train_segments_mp3.hdf")
    unbalanced_train_hdf5 = os.path.join(base_dir, "mp3", "unbalanced_train_segments_mp3.hdf")
    eval_hdf5 = os.path.join(base_dir, "mp3", "eval_segments_mp3.hdf")
    use_full_set = True  # train on balanced + unbalanced (False: balanced only)
    n_classes = 527  # checked against the files' targets
    sample_weight_offset = 100  # importance weight of a clip: sum over labels of 1000 / (count + offset)
    sample_weight_sum = True  # False: the largest of the label weights instead of their sum
    epoch_len = 100000  # clips drawn per epoch by the weighted sampler
    sampler_replace = False  # False: an epoch draws epoch_len distinct clips
    sampler_seed = None  # base seed of the sampler (plus the epoch); None: the run's seed; 0: the original's


def prepare_command(hdf5_path: str | os.PathLike) -> str:
    """The prepare-script command that creates ``hdf5_path`` (used in "file not found" errors)."""
    base = os.path.basename(os.fspath(hdf5_path))
    csv_name = next((csv for key, csv in _SEGMENT_CSVS.items() if base.startswith(key)), "<segments>.csv")
    return (
        "python -m audioset.prepare_scripts.create_h5pymp3_dataset "
        f"--segments {csv_name} --audio-dir <folder of downloaded audio> --out {os.fspath(hdf5_path)}"
        "  (see audioset/README.md)"
    )


def _open_sets(
    hdf5_paths: Sequence[str | os.PathLike],
    sample_rate: int,
    clip_length: float,
    n_classes: int,
    strict_decoding: bool,
    corrupt_log: str | os.PathLike | None,
) -> Dataset:
    sets = [
        Hdf5AudioDataset(
            path,
            clip_length=seconds_to_samples(clip_length, sample_rate),
            sample_rate=sample_rate,
            n_classes=n_classes,
            strict_decoding=strict_decoding,
            prepare_hint=prepare_command(path),
            corrupt_log=corrupt_log,
        )
        for path in hdf5_paths
    ]
    if not sets:
        raise ValueError("no HDF5 files given")
    return sets[0] if len(sets) == 1 else concat_datasets(sets)


def build_training_set(
    hdf5_paths: Sequence[str | os.PathLike],
    *,
    sample_rate: int = 32000,
    clip_length: float = 10,
    n_classes: int = 527,
    strict_decoding: bool = False,
    corrupt_log: str | os.PathLike | None = None,
    **augmentation: Any,
) -> Dataset:
    """Training clips of the given files (concatenated in order) with the training augmentations.

    ``augmentation``: the arguments of :func:`helpers.data.augment.augment_training_set` (gain, roll,
    wavmix; its defaults are the original's). Order of the wrappers: decode -> gain -> roll -> wavmix.
    """
    ds = _open_sets(hdf5_paths, sample_rate, clip_length, n_classes, strict_decoding, corrupt_log)
    return augment_training_set(ds, **augmentation)


def build_test_set(
    eval_hdf5: str | os.PathLike,
    *,
    sample_rate: int = 32000,
    clip_length: float = 10,
    n_classes: int = 527,
    strict_decoding: bool = False,
    corrupt_log: str | os.PathLike | None = None,
) -> Dataset:
    """Evaluation clips, without augmentation."""
    return _open_sets([eval_hdf5], sample_rate, clip_length, n_classes, strict_decoding, corrupt_log)


def build_weighted_sampler(
    hdf5_paths: Sequence[str | os.PathLike],
    *,
    n_classes: int = 527,
    sample_weight_offset: float = 100,
    sample_weight_sum: bool = True,
    epoch_len: int = 100000,
    sampler_replace: bool = False,
    seed: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DistributedSamplerWrapper:
    """Class-balanced importance sampler over the clips of ``hdf5_paths`` (same order as the training set)."""
    weights = sample_weights_from_hdf5(
        hdf5_paths, n_classes=n_classes, offset=sample_weight_offset, prepare_hint=prepare_command,
        weight_sum=sample_weight_sum,
    )
    sampler = make_weighted_sampler(weights, epoch_len=epoch_len, replacement=sampler_replace)
    return DistributedSamplerWrapper(sampler, num_replicas=num_replicas, rank=rank, seed=seed)


def _training_files(use_full_set: bool, balanced_train_hdf5: str, unbalanced_train_hdf5: str) -> list[str]:
    return [balanced_train_hdf5, unbalanced_train_hdf5] if use_full_set else [balanced_train_hdf5]


@dataset.capture
def get_training_set(
    use_full_set, balanced_train_hdf5, unbalanced_train_hdf5, sample_rate, clip_length, n_classes, strict_decoding,
    corrupt_log, _config,
) -> Dataset:
    """The training set with the configured augmentations.

    Balanced + unbalanced (about 2M clips, in that order) when ``use_full_set`` (the default),
    else the balanced set alone (about 20k clips); the same files as :func:`get_ft_weighted_sampler`.
    """
    return build_training_set(
        _training_files(use_full_set, balanced_train_hdf5, unbalanced_train_hdf5), sample_rate=sample_rate,
        clip_length=clip_length, n_classes=n_classes, strict_decoding=strict_decoding, corrupt_log=corrupt_log,
        **augmentation_of(_config),
    )


def get_base_training_set(**overrides: Any) -> Dataset:
    """The balanced training set alone, whatever ``use_full_set`` says (``overrides`` as for a captured function)."""
    return get_training_set(use_full_set=False, **overrides)


@dataset.capture
def get_test_set(eval_hdf5, sample_rate, clip_length, n_classes, strict_decoding, corrupt_log) -> Dataset:
    """The AudioSet evaluation set, without augmentation."""
    return build_test_set(
        eval_hdf5, sample_rate=sample_rate, clip_length=clip_length, n_classes=n_classes,
        strict_decoding=strict_decoding, corrupt_log=corrupt_log,
    )


@dataset.capture
def get_ft_weighted_sampler(
    run_seed, epoch_len, sampler_replace, use_full_set, balanced_train_hdf5, unbalanced_train_hdf5, n_classes,
    sample_weight_offset, sample_weight_sum, sampler_seed,
) -> DistributedSamplerWrapper:
    """Importance sampler over the training set of :func:`get_training_set`, split among DDP ranks.

    Its seed is ``sampler_seed`` or, when None, ``run_seed``: the run's seed, which the training
    loop passes (under DDP, rank 0's, which every rank takes).
    """
    seed = sampler_seed if sampler_seed is not None else run_seed
    return build_weighted_sampler(
        _training_files(use_full_set, balanced_train_hdf5, unbalanced_train_hdf5), n_classes=n_classes,
        sample_weight_offset=sample_weight_offset, sample_weight_sum=sample_weight_sum, epoch_len=epoch_len,
        sampler_replace=sampler_replace,
        seed=seed,
    )


@dataset.capture
def hdf5_files(use_full_set, balanced_train_hdf5, unbalanced_train_hdf5, eval_hdf5) -> list[str]:
    """The training files (as :func:`get_training_set` uses them) and the evaluation file."""
    return _training_files(use_full_set, balanced_train_hdf5, unbalanced_train_hdf5) + [eval_hdf5]
