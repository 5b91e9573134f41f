"""Datasets to DataLoaders: the ``datasets.training`` / ``datasets.test`` config, checks, DDP sharding.

The loaders are made lazily by a LightningDataModule, i.e. after Lightning has set up the
process group, so samplers can shard by rank:

* training: the experiment's own sampler when it has one and ``weighted_sampler`` is on (the
  AudioSet importance sampler splits its draws among ranks itself), else a seeded shuffle per
  epoch (``DistributedSampler``, with one replica outside DDP); wrapped so that an epoch can
  restart at any batch with the same clips and augmentations (:mod:`helpers.data.resumable`);
* evaluation (one loader per evaluation set): in order; under DDP a
  ``DistributedSampler(shuffle=False)``, whose padding the Lightning module removes again after
  gathering (every example is scored exactly once).

The Trainer runs with ``use_distributed_sampler=False`` so Lightning keeps these samplers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from helpers.data.resumable import ResumableSampler, ResumePoint, SeededItems

#: keys of ``datasets.training``/``datasets.test`` that are ours, not DataLoader arguments
OWN_LOADER_KEYS = ("weighted_sampler",)

#: the original's worker count, kept as the ceiling: a worker decodes ~275 clips/s on a 2-core EPYC
#: (benchmarks/data_loading.py), so 16 feed ~4400 clips/s, several times what PaSST-S trains at on an H100
MAX_WORKERS = 16
#: clips/s one worker decodes (10 s mp3 at 32 kHz, decode + gain + roll + collate; AMD EPYC core)
WORKER_CLIPS_PER_S = 275
#: clips/s one GPU trains PaSST-S at: batch 12 in ~13 ms per step on an H100 (README, "Training at GPU speed")
GPU_CLIPS_PER_S = 920


def default_num_workers(cores: int) -> int:
    """DataLoader workers for a process that has ``cores`` CPU cores: ``max(1, min(16, cores - 1))``.

    One core stays with the training process itself (it feeds the accelerator); at least one
    worker, so decoding never blocks the training loop.
    """
    return max(1, min(MAX_WORKERS, cores - 1))


def loader_supply_warning(num_workers: int, cores: int) -> str | None:
    """Why ``num_workers`` decoding workers per process cannot feed a GPU (None when they can).

    ``cores``: the CPUs this process may use (``helpers.experiment.ddp.cores_per_process``).
    """
    supply = max(1, num_workers) * WORKER_CLIPS_PER_S
    if supply >= GPU_CLIPS_PER_S:
        return None
    needed = -(-GPU_CLIPS_PER_S // WORKER_CLIPS_PER_S)
    return (f"datasets.training.num_workers={num_workers}: about {supply} clips/s per GPU, where PaSST-S trains "
            f"~{GPU_CLIPS_PER_S} clips/s on an H100 (~{WORKER_CLIPS_PER_S} per worker): the GPU will wait for data. "
            f"This process may use {cores} CPU(s); give each training process at least {needed + 1} (one trains, "
            f"{needed} decode): under SLURM `#SBATCH --cpus-per-task={needed + 1}` or more (its default is one CPU "
            f"per task), or fewer processes per machine.")


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
        eval_sets: ``(dataset, loader config)`` of every evaluation set, in validation order.
        training_cfg: the ``datasets.training`` config.
        seed: the run's seed: of the training shuffle, the experiment's sampler and the clips'
            augmentations (under DDP, rank 0's: the run sets it once the ranks agreed on it).
        train_sampler: makes the experiment's own training sampler from the run's seed (used when
            ``training_cfg["weighted_sampler"]`` is true).

    Attributes:
        resume_point: where the first training epoch starts; a resumed run sets it from the checkpoint.
    """

    def __init__(self, train_set: Dataset | None, eval_sets: Sequence[tuple[Dataset, dict[str, Any]]],
                 training_cfg: dict[str, Any], train_sampler: Callable[[int], Sampler] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.train_set, self.eval_sets = train_set, [(ds, dict(cfg)) for ds, cfg in eval_sets]
        self.training_cfg = dict(training_cfg)
        self.train_sampler = train_sampler
        self.seed = seed
        self.resume_point = ResumePoint()

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("This data module has no training set")
        cfg = dict(self.training_cfg)
        if cfg.get("weighted_sampler") and self.train_sampler is not None:
            sampler = self.train_sampler(self.seed)
        else:
            world, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank,
                                         shuffle=bool(cfg.get("shuffle", True)), seed=self.seed)
        sampler = ResumableSampler(sampler, cfg.get("batch_size") or 1, self.seed, self.resume_point)
        return make_loader(SeededItems(self.train_set), cfg, sampler)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per evaluation set (a single set gives a single loader)."""
        if not self.eval_sets:
            raise RuntimeError("This data module has no evaluation set")
        loaders = []
        for dataset, cfg in self.eval_sets:
            cfg = {**cfg, "shuffle": False}  # the module restores the order of DistributedSampler shards
            sampler = DistributedSampler(dataset, shuffle=False) if _distributed() else None
            loaders.append(make_loader(dataset, cfg, sampler))
        return loaders[0] if len(loaders) == 1 else loaders
