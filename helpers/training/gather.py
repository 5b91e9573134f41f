"""The evaluation set from all DDP ranks, each example once.

Validation shards the evaluation set in order with ``DistributedSampler(shuffle=False)``; the
module gathers every rank's logits and targets and undoes the sharding here, so metrics are
computed on the full set exactly once per example.
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler


def restore_padded_order(gathered: torch.Tensor, dataset_len: int) -> torch.Tensor:
    """Undo :class:`~torch.utils.data.DistributedSampler` sharding: global order, padding removed.

    ``gathered`` is ``[world, n_per_rank, ...]`` from ``all_gather``; with ``shuffle=False`` rank
    ``r``'s ``p``-th example is dataset index ``p * world + r``, and indices ``>= dataset_len`` are
    the sampler's padding (repeats of the first examples), which are dropped.
    """
    world, n = gathered.shape[:2]
    interleaved = gathered.transpose(0, 1).reshape(world * n, *gathered.shape[2:])
    return interleaved[:dataset_len]


def is_unshuffled_distributed_sampler(sampler: object) -> bool:
    """True when ``sampler`` shards like ``DistributedSampler(shuffle=False, drop_last=False)``."""
    return (isinstance(sampler, DistributedSampler) and type(sampler).__iter__ is DistributedSampler.__iter__
            and not sampler.shuffle and not sampler.drop_last)
