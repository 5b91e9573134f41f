"""Training epochs that can restart at any batch and draw the same clips and augmentations again.

Resuming a killed run in the middle of an epoch needs the rest of that epoch exactly as it would
have been: the same clips in the same order, with the same random gain, roll and wavmix. Two
wrappers make the epoch a function of ``(seed, epoch, rank)`` alone:

* :class:`ResumableSampler` wraps the epoch's sampler (the importance sampler, a
  ``DistributedSampler``). It hands out keys ``(clip index, item seed)``, the seed derived from
  ``(seed, epoch, rank, position in the epoch)``, and can start an epoch at a given batch: the
  skipped clips are never loaded. The position to start at comes from a :class:`ResumePoint`,
  which the training side fills from the checkpoint (:mod:`helpers.training.resume`).
* :class:`SeededItems` wraps the training dataset: it loads each clip with torch's generator
  seeded by the clip's item seed, so its random augmentations do not depend on which DataLoader
  worker loaded it or on what that worker loaded before (with per-worker streams they would).
  The same seed thus gives the same batches with any number of workers, before and after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumePoint", "ResumableSampler", "SeededItems", "derived_seeds"]


def derived_seeds(seed: int, key: tuple[int, ...], n: int) -> list[int]:
    """``n`` independent 63-bit seeds for the stream named ``key`` of the run seeded ``seed``."""
    words = np.random.SeedSequence([int(seed) % 2**63, *(int(k) for k in key)]).generate_state(n, np.uint64)
    return (words >> np.uint64(1)).tolist()  # torch.manual_seed takes signed 64-bit values


@dataclass
class ResumePoint:
    """Where the next training epoch starts: ``epoch`` and the batches of it already trained.

    Filled once from a checkpoint, taken once by the sampler's next epoch.
    """

    epoch: int | None = None
    batch: int = 0

    def take(self) -> tuple[int, int] | None:
        """``(epoch, batch)`` if a start was set (and forget it), else None."""
        if self.epoch is None:
            return None
        start, self.epoch, self.batch = (self.epoch, self.batch), None, 0
        return start


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class ResumableSampler(Sampler[tuple[int, int]]):
    """``sampler``'s indices with an item seed each, starting an epoch at a :class:`ResumePoint`.

    Args:
        sampler: draws the clip indices of an epoch (``set_epoch`` is forwarded to it).
        batch_size: clips per batch, to turn "batches done" into clips to skip.
        seed: the run's seed; item seeds come from ``(seed, epoch, rank, position)``.
        resume_point: the start of the first epoch after a resume (None: from the beginning).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, seed: int,
                 resume_point: ResumePoint | None = None) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.resume_point = resume_point or ResumePoint()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the clips of ``epoch`` on the next iteration (Lightning calls this every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip = 0
        start = self.resume_point.take()
        if start is not None:
            # set before the DataLoader's first (possibly eager) iteration, so even that one is right
            self.epoch, skip = start[0], start[1] * self.batch_size
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        order_seed, *seeds = derived_seeds(self.seed, (self.epoch, _rank()), len(self.sampler) + 1)
        with torch.random.fork_rng(devices=[]):  # a sampler drawing from torch's generator draws the same again
            torch.default_generator.manual_seed(order_seed)
            indices = [int(i) for i in self.sampler]
        self.epoch += 1  # without set_epoch (outside Lightning) every pass is a new epoch
        return iter(list(zip(indices, seeds, strict=True))[skip:])


class SeededItems(Dataset):
    """``dataset[index]`` loaded under torch's generator seeded with the key's item seed.

    Keys are ``(index, seed)`` pairs from :class:`ResumableSampler`. The caller's generator state
    is restored afterwards (in a loader without workers, loading must not change the training
    step's random draws).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)
