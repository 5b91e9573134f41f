"""Class-balanced importance sampling and a DDP wrapper for any sampler.

AudioSet is very unbalanced ("Music" and "Speech" are on about half the clips, hundreds of
classes on a few hundred). Clips are therefore drawn with probability proportional to

    weight(clip) = sum over the clip's labels l of 1000 / (frequency(l) + offset)

(``sample_weight_sum=False``: the maximum over the labels instead of the sum), where
``frequency(l)`` counts the training clips with label ``l`` and ``offset`` (the config key
``sample_weight_offset``, default 100) keeps very rare classes from dominating. A clip without
labels gets weight 0 and is never drawn. As in the original, an epoch draws ``epoch_len``
distinct clips (without replacement) unless ``sampler_replace=True``.

* :func:`weights_from_packed_targets` / :func:`sample_weights_from_hdf5` compute the weights from
  the packed targets (``np.packbits`` rows) with byte lookup tables, so 2M clips take a second or
  two and little memory (no unpacked [clips, 527] matrix).
* :func:`make_weighted_sampler` draws ``epoch_len`` clips per epoch (without replacement by default).
* :class:`DistributedSamplerWrapper` splits what any sampler draws among DDP ranks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler, WeightedRandomSampler

from helpers.data.hdf5_dataset import check_hdf5_layout, open_hdf5, read_targets, require_hdf5

__all__ = [
    "label_frequencies",
    "weights_from_packed_targets",
    "sample_weights_from_hdf5",
    "make_weighted_sampler",
    "DistributedSamplerWrapper",
]

# _BITS[v] = the 8 bits of byte value v, most significant first (np.packbits order).
_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float64)


def _check_packed(packed: np.ndarray, n_classes: int) -> np.ndarray:
    packed = np.asarray(packed)
    width = math.ceil(n_classes / 8)
    if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != width:
        raise ValueError(
            f"packed targets must be uint8 [clips, {width}] for n_classes={n_classes}, "
            f"got {packed.dtype} {packed.shape}"
        )
    return packed


def label_frequencies(packed: np.ndarray, n_classes: int) -> np.ndarray:
    """Number of clips carrying each label, from packed targets ``uint8 [clips, ceil(n_classes/8)]``."""
    packed = _check_packed(packed, n_classes)
    counts = np.zeros(packed.shape[1] * 8)
    for col in range(packed.shape[1]):
        # How often each byte value occurs in this column, spread onto its 8 bits.
        byte_counts = np.bincount(packed[:, col], minlength=256).astype(np.float64)
        counts[col * 8 : col * 8 + 8] = byte_counts @ _BITS
    return counts[:n_classes]


def weights_from_packed_targets(packed: np.ndarray, n_classes: int, offset: float = 100.0,
                                weight_sum: bool = True) -> np.ndarray:
    """Per-clip sampling weights ``sum_l 1000 / (freq_l + offset)`` (see the module docstring).

    Args:
        packed: ``np.packbits`` targets, ``uint8 [clips, ceil(n_classes/8)]``.
        n_classes: the number of labels.
        offset: added to every label frequency (``sample_weight_offset``).
        weight_sum: sum the weights of a clip's labels (False: take their maximum).

    Returns:
        float64 weights of shape ``[clips]``.
    """
    packed = _check_packed(packed, n_classes)
    if offset < 0:
        raise ValueError(f"sample_weight_offset must be >= 0, got {offset}")
    freq = label_frequencies(packed, n_classes)
    with np.errstate(divide="ignore"):
        label_weight = 1000.0 / (freq + offset)
    # Labels that never occur contribute nothing (and avoid 1000/0 when offset is 0).
    label_weight[freq == 0] = 0.0
    padded = np.zeros(packed.shape[1] * 8)
    padded[:n_classes] = label_weight
    weights = np.zeros(packed.shape[0])
    for col in range(packed.shape[1]):
        # table[v] = summed (or largest) weight of the labels whose bits are set in byte value v.
        label_weights = _BITS * padded[col * 8 : col * 8 + 8]
        if weight_sum:
            weights += label_weights.sum(axis=1)[packed[:, col]]
        else:
            np.maximum(weights, label_weights.max(axis=1)[packed[:, col]], out=weights)
    return weights


def sample_weights_from_hdf5(
    paths: Sequence[str | os.PathLike],
    n_classes: int = 527,
    offset: float = 100.0,
    prepare_hint: Callable[[str], str] | None = None,
    weight_sum: bool = True,
) -> np.ndarray:
    """Sampling weights over the clips of several HDF5 files, in file order.

    The label frequencies are counted over all files together, i.e. over the whole training
    set (balanced + unbalanced AudioSet), matching a ConcatDataset of the same files.
    All files are checked to exist before any is read; ``prepare_hint(path)`` gives the command
    that creates a missing one (None: a generic hint).
    """
    hints = [prepare_hint(os.fspath(path)) if prepare_hint else None for path in paths]
    paths = [require_hdf5(path, hint) for path, hint in zip(paths, hints, strict=True)]
    parts = []
    for path, hint in zip(paths, hints, strict=True):
        with open_hdf5(path, hint) as hf:
            check_hdf5_layout(hf, path, n_classes)
            parts.append(read_targets(hf, n_classes))
    if not parts:
        raise ValueError("sample_weights_from_hdf5 needs at least one HDF5 file")
    return weights_from_packed_targets(np.concatenate(parts), n_classes, offset, weight_sum)


def make_weighted_sampler(
    weights: np.ndarray | Sequence[float], epoch_len: int = 100_000, replacement: bool = False
) -> WeightedRandomSampler:
    """A sampler drawing ``epoch_len`` clip indices per epoch with probability ∝ ``weights``."""
    weights = torch.as_tensor(np.asarray(weights), dtype=torch.double)
    if epoch_len <= 0:
        raise ValueError(f"epoch_len must be positive, got {epoch_len}")
    if not replacement and epoch_len > int((weights > 0).sum()):
        raise ValueError(
            f"epoch_len={epoch_len} is larger than the {int((weights > 0).sum())} clips with non-zero weight; "
            "use sampler_replace=True or a smaller epoch_len"
        )
    return WeightedRandomSampler(weights, num_samples=int(epoch_len), replacement=replacement)


class DistributedSamplerWrapper(Sampler[int]):
    """Gives each DDP rank a disjoint share of what ``sampler`` draws.

    Every rank draws the full sequence with the same seed (``seed + epoch``), then keeps the
    positions ``rank, rank + world_size, ...``. The sequence is padded by wrapping around so
    every rank gets ``ceil(len(sampler) / world_size)`` indices (``drop_last=True`` cuts instead).

    Rank and world size: the explicit arguments if given, else torch.distributed's when it is
    initialised (looked up when iterating, so the wrapper may be built before DDP starts), else
    0 and 1. Call :meth:`set_epoch` before each epoch (PyTorch Lightning does it for samplers
    having it); without it the epoch counter advances by one per iteration, the same on all ranks.
    With Lightning, pass ``use_distributed_sampler=False`` to the Trainer so that it keeps this
    sampler instead of substituting its own.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.sampler = sampler
        self._num_replicas = num_replicas
        self._rank = rank
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def num_replicas(self) -> int:
        """World size (explicit, from torch.distributed, or 1)."""
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        """This process' rank (explicit, from torch.distributed, or 0)."""
        if self._rank is not None:
            rank = self._rank
        else:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < self.num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {self.num_replicas})")
        return rank

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch`` (same on all ranks)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, world = len(self.sampler), self.num_replicas
        return n // world if self.drop_last else math.ceil(n / world)

    def _draw(self) -> list[int]:
        """The inner sampler's indices for this epoch, identical on every rank."""
        seed = self.seed + self.epoch
        if hasattr(self.sampler, "generator"):
            previous = self.sampler.generator
            self.sampler.generator = torch.Generator().manual_seed(seed)
            try:
                return list(self.sampler)
            finally:
                self.sampler.generator = previous
        # Samplers drawing from the global generator: seed a private copy of its state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return list(self.sampler)

    def __iter__(self) -> Iterator[int]:
        indices = self._draw()
        world, rank = self.num_replicas, self.rank
        total = len(self) * world
        if total > len(indices) and indices:
            indices += (indices * math.ceil(total / len(indices)))[: total - len(indices)]
        indices = indices[:total]
        self.epoch += 1
        return iter(indices[rank:total:world])
