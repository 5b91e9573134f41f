"""Waveform-level augmentation wrappers shared by all datasets.

Each wrapper takes a dataset whose items are ``(waveform [1, n] float32, name, target)`` and
returns items of the same form:

* :class:`GainAugmentDataset` -- multiply by a random gain, uniform in ``[-gain_db, +gain_db]`` dB.
* :class:`RollDataset` -- ``np.roll`` the waveform by a random shift (circular time shift).
* :class:`MixupDataset` -- waveform mixup ("wavmix"): with probability ``rate``, mix the clip with
  a random other clip, ``x = lam * x1 + (1 - lam) * x2`` and ``y = lam * y1 + (1 - lam) * y2``
  where ``lam ~ Beta(alpha, alpha)`` and ``lam = max(lam, 1 - lam)``, so the indexed clip always
  dominates and its name stays meaningful. The scheme (mix rate, max(lam, 1 - lam)) follows the
  original project's waveform mixup, which used Beta(2, 2) and removed each clip's mean first;
  here alpha is the config's ``mixup_alpha`` and clips are mixed as they are (decoded audio has
  no meaningful DC offset). The batch mixup of the training step is separate.
* :func:`concat_datasets` -- one dataset made of several (e.g. balanced + unbalanced AudioSet).

Randomness comes from torch's global generator, which the DataLoader seeds differently in every
worker (NumPy's global generator would repeat the same "random" values in each worker).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

__all__ = ["GainAugmentDataset", "RollDataset", "MixupDataset", "concat_datasets", "folded_beta", "random_gain",
           "random_roll"]

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


def random_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    """``wave`` scaled by a gain drawn uniformly in ``[-gain_db, +gain_db]`` decibels."""
    gain = (torch.rand(()).item() * 2.0 - 1.0) * gain_db
    return wave * np.float32(10.0 ** (gain / 20.0))


def random_roll(wave: np.ndarray, max_shift: int | None = None) -> np.ndarray:
    """``wave`` circularly shifted along its last axis by a random shift in ``[-max_shift, max_shift]``.

    ``max_shift=None`` allows any shift (uniform over the clip length).
    """
    n = wave.shape[-1]
    limit = n if max_shift is None else min(int(max_shift), n)
    shift = int(torch.randint(-limit, limit + 1, ()).item())
    return np.roll(wave, shift, axis=-1)


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
    """Random gain in ``±gain_db`` dB on every item (``gain_db=0`` leaves items unchanged)."""

    def __init__(self, dataset: Dataset, gain_db: float = 7.0) -> None:
        super().__init__(dataset)
        if gain_db < 0:
            raise ValueError(f"gain_db must be >= 0, got {gain_db}")
        self.gain_db = float(gain_db)

    def __getitem__(self, index: int) -> Item:
        wave, name, target = self.dataset[index]
        if self.gain_db > 0:
            wave = random_gain(wave, self.gain_db)
        return wave, name, target


class RollDataset(_Wrapper):
    """Random circular time shift of every item (see :func:`random_roll`)."""

    def __init__(self, dataset: Dataset, max_shift: int | None = None) -> None:
        super().__init__(dataset)
        self.max_shift = max_shift

    def __getitem__(self, index: int) -> Item:
        wave, name, target = self.dataset[index]
        return random_roll(wave, self.max_shift), name, target


class MixupDataset(_Wrapper):
    """Waveform mixup of an item with a random other item (module docstring has the formula).

    Args:
        dataset: items ``(wave, name, target)`` with equal-length waves.
        alpha: the Beta(alpha, alpha) parameter of the mixing weight.
        rate: the probability that an item is mixed at all.
    """

    def __init__(self, dataset: Dataset, alpha: float = 0.3, rate: float = 0.5) -> None:
        super().__init__(dataset)
        folded_beta(alpha, 0)  # validates alpha now rather than in a worker
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"mixup rate must be in [0, 1], got {rate}")
        self.alpha = float(alpha)
        self.rate = float(rate)

    def __getitem__(self, index: int) -> Item:
        wave1, name1, target1 = self.dataset[index]
        if torch.rand(()).item() >= self.rate:
            return wave1, name1, target1
        wave2, _, target2 = self.dataset[int(torch.randint(len(self.dataset), ()).item())]
        lam = float(folded_beta(self.alpha, 1))
        wave = (lam * wave1 + (1.0 - lam) * wave2).astype(np.float32, copy=False)
        target = (lam * target1 + (1.0 - lam) * target2).astype(np.float32, copy=False)
        return wave, name1, target


def concat_datasets(datasets: Sequence[Dataset]) -> ConcatDataset:
    """Concatenate datasets, checking that those declaring ``n_classes`` agree."""
    datasets = list(datasets)
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    n_classes = {ds.n_classes for ds in datasets if hasattr(ds, "n_classes")}
    if len(n_classes) > 1:
        raise ValueError(f"cannot concatenate datasets with different n_classes: {sorted(n_classes)}")
    return ConcatDataset(datasets)
