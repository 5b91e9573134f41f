"""Waveform-level augmentation wrappers shared by all datasets, with the original recipe's draws.

Each wrapper takes a dataset whose items are ``(waveform [1, n] float32, name, target)`` and
returns items of the same form:

* :class:`GainAugmentDataset` -- multiply by a gain of a whole number of decibels, uniform in
  ``[-gain_db, gain_db - 1]`` (the original draws ``randint(2 * gain_db) - gain_db``).
* :class:`RollDataset` -- circular time shift by a whole number of samples, uniform in
  ``[-shift_range, shift_range]`` (or a fixed ``shift``).
* :class:`MixupDataset` -- waveform mixup ("wavmix"): with probability ``rate``, the clip is mixed
  with a uniformly drawn other clip: both have their mean removed, ``x = lam * x1 + (1 - lam) * x2``
  is re-centred, and the targets are mixed with the same ``lam ~ Beta(beta, beta)`` folded to
  ``max(lam, 1 - lam)``, so the indexed clip always dominates and its name stays meaningful. A
  dataset with another target layout passes its own ``mix_targets`` (OpenMIC mixes masked labels).
  The batch mixup of spectrograms in the training step is separate.
* :func:`concat_datasets` -- one dataset made of several (e.g. balanced + unbalanced AudioSet).
* :func:`augment_training_set` -- the three wrappers in the original's order, as every
  dataset's ``basedataset`` config switches them.

Randomness comes from torch's global generator, which the DataLoader seeds differently in every
worker (NumPy's global generator would repeat the same "random" values in each worker). Every
draw is named (:mod:`helpers.data.draws`), so an item's augmentation can be recorded and replayed
exactly (consistent teaching), or left out (the clean clip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from helpers.data import draws

__all__ = ["GainAugmentDataset", "RollDataset", "MixupDataset", "augment_training_set", "concat_datasets",
           "folded_beta", "mix_linearly", "random_gain", "random_roll"]

Item = tuple[np.ndarray, str, np.ndarray]


def folded_beta(alpha: float, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` mixing weights ``max(lam, 1 - lam)`` with ``lam ~ Beta(alpha, alpha)``, float32 on ``device``.

    Folding keeps the weight of the example itself at >= 0.5, so it always dominates its mix
    (waveform mixup here, and the batch mixup of :mod:`helpers.training.mixup`).
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    # no host sync on an accelerator: torch.full needs no blocking copy (torch.tensor does), and
    # alpha, checked above, needs no argument check on the device
    a = torch.full((), float(alpha), device=device)
    lam = torch.distributions.Beta(a, a, validate_args=False).sample((n,))
    return torch.maximum(lam, 1.0 - lam).float()


def random_gain(wave: np.ndarray, gain_db: int) -> np.ndarray:
    """``wave`` scaled by a whole number of decibels drawn uniformly from ``[-gain_db, gain_db - 1]``."""
    gain = draws.value("gain_db", lambda: int(torch.randint(2 * gain_db, ())) - gain_db, neutral=0)
    return wave * np.float32(10.0 ** (gain / 20.0))


def random_roll(wave: np.ndarray, shift_range: int = 50, shift: int | None = None) -> np.ndarray:
    """``wave`` circularly shifted along its last (time) axis.

    By ``shift`` samples when given, else by a shift drawn uniformly from ``[-shift_range, shift_range]``.
    """
    if shift is None:
        shift = draws.value("roll", lambda: int(torch.randint(-shift_range, shift_range + 1, ())), neutral=0)
    return np.roll(wave, shift, axis=-1)


def mix_linearly(target1: np.ndarray, target2: np.ndarray, lam: float) -> np.ndarray:
    """``lam * target1 + (1 - lam) * target2``: how wavmix mixes (multi-hot or one-hot) targets."""
    return (lam * target1 + (1.0 - lam) * target2).astype(np.float32, copy=False)


class _Wrapper(Dataset):
    """Forwards length and attribute look-ups (e.g. ``n_classes``) to the wrapped dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # Only called for attributes missing on the wrapper; guard against recursion when
        # unpickling, where ``dataset`` is not set yet.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class GainAugmentDataset(_Wrapper):
    """Random whole-decibel gain on every item (see :func:`random_gain`; ``gain_db=0`` changes nothing)."""

    def __init__(self, dataset: Dataset, gain_db: int = 7) -> None:
        super().__init__(dataset)
        if gain_db < 0 or int(gain_db) != gain_db:
            raise ValueError(f"gain_augment must be a whole number of decibels >= 0, got {gain_db}")
        self.gain_db = int(gain_db)

    def __getitem__(self, index: int) -> Item:
        wave, name, target = self.dataset[index]
        if self.gain_db > 0:
            wave = random_gain(wave, self.gain_db)
        return wave, name, target


class RollDataset(_Wrapper):
    """Random circular time shift of every item (see :func:`random_roll`)."""

    def __init__(self, dataset: Dataset, shift_range: int = 50, shift: int | None = None) -> None:
        super().__init__(dataset)
        if shift_range < 0:
            raise ValueError(f"roll shift_range must be >= 0, got {shift_range}")
        self.shift_range, self.shift = int(shift_range), shift

    @classmethod
    def from_roll_conf(cls, dataset: Dataset, roll_conf: dict | None) -> RollDataset:
        """From the original's ``basedataset.roll_conf`` (``axis``, ``shift``, ``shift_range``)."""
        conf = {"axis": 1, "shift": None, "shift_range": 50, **(roll_conf or {})}
        if conf["axis"] not in (1, -1):
            raise ValueError(f"basedataset.roll_conf.axis={conf['axis']}: only the time axis of the [1, samples] "
                             f"waveforms (axis 1) can be rolled")
        return cls(dataset, shift_range=conf["shift_range"], shift=conf["shift"])

    def __getitem__(self, index: int) -> Item:
        wave, name, target = self.dataset[index]
        return random_roll(wave, self.shift_range, self.shift), name, target


class MixupDataset(_Wrapper):
    """Waveform mixup of an item with a random other item (the module docstring has the recipe).

    Args:
        dataset: items ``(wave, name, target)`` with equal-length waves.
        beta: the parameter of the ``Beta(beta, beta)`` mixing weight (the original: 2).
        rate: the probability that an item is mixed at all (the original: 0.5).
        mix_targets: ``f(target1, target2, lam) -> target``; a module-level function (it travels
            to DataLoader workers). Default: :func:`mix_linearly`.
    """

    def __init__(self, dataset: Dataset, beta: float = 2.0, rate: float = 0.5,
                 mix_targets: Callable[[np.ndarray, np.ndarray, float], np.ndarray] = mix_linearly) -> None:
        super().__init__(dataset)
        folded_beta(beta, 0)  # validates beta now rather than in a worker
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"wavmix rate must be in [0, 1], got {rate}")
        self.beta, self.rate, self.mix_targets = float(beta), float(rate), mix_targets

    def __getitem__(self, index: int) -> Item:
        if not draws.value("wavmix", lambda: float(torch.rand(())) < self.rate, neutral=False):
            return self.dataset[index]
        wave1, name1, target1 = self.dataset[index]
        partner = draws.value("partner", lambda: int(torch.randint(len(self.dataset), ())), neutral=None)
        with draws.scope("partner."):
            wave2, name2, target2 = self.dataset[partner]
        draws.note("partner_name", name2)  # the clip actually mixed in (a corrupt one is replaced by the next)
        lam = draws.value("lam", lambda: float(folded_beta(self.beta, 1)), neutral=1.0)
        wave = lam * (wave1 - wave1.mean()) + (1.0 - lam) * (wave2 - wave2.mean())
        return (wave - wave.mean()).astype(np.float32, copy=False), name1, self.mix_targets(target1, target2, lam)


def concat_datasets(datasets: Sequence[Dataset]) -> ConcatDataset:
    """Concatenate datasets, checking that those declaring ``n_classes`` agree."""
    datasets = list(datasets)
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    n_classes = {ds.n_classes for ds in datasets if hasattr(ds, "n_classes")}
    if len(n_classes) > 1:
        raise ValueError(f"cannot concatenate datasets with different n_classes: {sorted(n_classes)}")
    return ConcatDataset(datasets)


#: the ``basedataset`` keys that are arguments of :func:`augment_training_set` (described in
#: :mod:`helpers.experiment.dataset_config`)
AUGMENTATION_KEYS = ("gain_augment", "roll", "roll_conf", "wavmix", "wavmix_beta", "wavmix_rate")


def augmentation_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`AUGMENTATION_KEYS` of a ``basedataset`` config, as :func:`augment_training_set` takes them."""
    return {key: config[key] for key in AUGMENTATION_KEYS}


def augment_training_set(dataset: Dataset, *, gain_augment: int = 7, roll: bool = True, roll_conf: dict | None = None,
                         wavmix: bool = True, wavmix_beta: float = 2, wavmix_rate: float = 0.5,
                         mix_targets: Callable[[np.ndarray, np.ndarray, float], np.ndarray] = mix_linearly) -> Dataset:
    """``dataset`` wrapped in the training augmentations, in the original's order: gain -> roll -> wavmix.

    The arguments are the ``basedataset`` keys of the same names; ``gain_augment=0``, ``roll=False``
    and ``wavmix=False`` leave a wrapper out.
    """
    if gain_augment:
        dataset = GainAugmentDataset(dataset, gain_augment)
    if roll:
        dataset = RollDataset.from_roll_conf(dataset, roll_conf)
    if wavmix:
        dataset = MixupDataset(dataset, beta=wavmix_beta, rate=wavmix_rate, mix_targets=mix_targets)
    return dataset
