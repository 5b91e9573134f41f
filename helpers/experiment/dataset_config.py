"""The ``basedataset`` keys every dataset shares, each described once, next to its default.

A dataset ingredient starts from :func:`shared_dataset_config` and adds its own keys (its files,
classes, ...) in a sacred config scope; ``print_config`` shows every key with its description::

    dataset = Ingredient("basedataset")
    dataset.configurations.append(shared_dataset_config(clip_length=5, wavmix=False))

    @dataset.config
    def default_config():
        name = "esc50"
        base_dir = "audioset_hdf5s/esc50/"  # the ESC-50 folder
        ...

The augmentation keys go to :func:`helpers.data.augment.augment_training_set` as they are
(:func:`helpers.data.augment.augmentation_of`).
"""

from __future__ import annotations

from helpers.experiment.config import DescribedConfig

#: what each shared key means (a dataset may say more about its own case, see shared_dataset_config)
DOCS = {
    "sample_rate": "decode at this rate (Hz)",
    "clip_length": "seconds; clips are zero-padded or cut to this",
    "gain_augment": "random gain of a whole number of dB in [-gain_augment, gain_augment - 1] (0: off)",
    "roll": "random circular time shift",
    "roll_conf": "shift: fixed samples; None: uniform in +-shift_range",
    "wavmix": "waveform mixup of two clips (means removed; the dominant clip keeps its name), targets mixed alike",
    "wavmix_beta": "wavmix weight ~ Beta(wavmix_beta, wavmix_beta), the larger part kept",
    "wavmix_rate": "share of the items that wavmix mixes",
    "strict_decoding": "True: a clip that fails to decode raises instead of being skipped (and counted)",
    "corrupt_log": "file collecting skipped clips from all DataLoader workers (None: in the run folder)",
}


def shared_dataset_config(*, clip_length: float = 10, wavmix: bool = True,
                          docs: dict[str, str] | None = None) -> DescribedConfig:
    """The shared ``basedataset`` keys with the original's defaults; ``clip_length`` and ``wavmix``
    differ between datasets, ``docs`` replaces a description where a dataset means more by a key."""
    values = {
        "sample_rate": 32000, "clip_length": clip_length, "gain_augment": 7, "roll": True,
        "roll_conf": {"axis": 1, "shift": None, "shift_range": 50}, "wavmix": wavmix, "wavmix_beta": 2,
        "wavmix_rate": 0.5, "strict_decoding": False, "corrupt_log": None,
    }
    return DescribedConfig(values, {**DOCS, **(docs or {})})
