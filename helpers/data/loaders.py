"""Datasets to DataLoaders: the ``datasets.training`` / ``datasets.test`` config, checks, DDP sharding.

The loaders are made lazily by a LightningDataModule, i.e. after Lightning has set up the
process group, so samplers can shard by rank:

* training: the experiment's own sampler when it has one and ``weighted_sampler`` is on (the
  AudioSet importance sampler splits its draws among ranks itself), else a seeded shuffle per
  epoch (``DistributedSampler``, with one replica outside DDP); wrapped so that an epoch can
  restart at any batch with the same clips and augmentations (:mod:`helpers.data.resumable`);
* test: in order; under DDP a ``DistributedSampler(shuffle=False)``, whose padding the Lightning
  module removes again after gathering (every example is scored exactly once).

The Trainer runs with ``use_distributed_sampler=False`` so Lightning keeps these samplers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from helpers.data.resumable import ResumableSampler, ResumePoint, SeededItems

#: keys of ``datasets.training``/``datasets.test`` that are ours, not DataLoader arguments
OWN_LOADER_KEYS = ("weighted_sampler",)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def make_loader(dataset: Dataset, loader_cfg: dict[str, Any], sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader from a ``datasets.<split>`` config dict (DataLoader arguments, checked by the caller)."""
    kwargs = {k: v for k, v in loader_cfg.items() if k not in OWN_LOADER_KEYS}
    if not kwargs.get("num_workers"):
        # options that only exist for worker processes
        kwargs.pop("persistent_workers", None)
        kwargs.pop("prefetch_factor", None)
    if sampler is not None:
        kwargs["shuffle"] = None
    return DataLoader(dataset, sampler=sampler, **kwargs)


class AudioDataModule(pl.LightningDataModule):
    """Builds the loaders when Lightning asks for them (after DDP setup).

    Args:
        train_set: training dataset (None for evaluation only).
        test_set: evaluation dataset.
        training_cfg / test_cfg: the ``datasets.training`` / ``datasets.test`` config.
        seed: the run's seed: of the training shuffle and of the clips' augmentations.
        train_sampler: makes the experiment's own training sampler (used when
            ``training_cfg["weighted_sampler"]`` is true).

    Attributes:
        resume_point: where the first training epoch starts; a resumed run sets it from the checkpoint.
    """

    def __init__(self, train_set: Dataset | None, test_set: Dataset | None, training_cfg: dict[str, Any],
                 test_cfg: dict[str, Any], train_sampler: Callable[[], Sampler] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.train_set, self.test_set = train_set, test_set
        self.training_cfg, self.test_cfg = dict(training_cfg), dict(test_cfg)
        self.train_sampler = train_sampler
        self.seed = seed
        self.resume_point = ResumePoint()

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("This data module has no training set")
        cfg = dict(self.training_cfg)
        if cfg.get("weighted_sampler") and self.train_sampler is not None:
            sampler = self.train_sampler()
        else:
            world, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank,
                                         shuffle=bool(cfg.get("shuffle", True)), seed=self.seed)
        sampler = ResumableSampler(sampler, cfg.get("batch_size") or 1, self.seed, self.resume_point)
        return make_loader(SeededItems(self.train_set), cfg, sampler)

    def val_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise RuntimeError("This data module has no test set")
        cfg = dict(self.test_cfg)
        cfg["shuffle"] = False  # the module restores the order of DistributedSampler shards
        sampler = DistributedSampler(self.test_set, shuffle=False) if _distributed() else None
        return make_loader(self.test_set, cfg, sampler)
