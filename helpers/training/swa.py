"""Stochastic weight averaging (Izmailov et al. 2018) of the network next to the live one.

The Lightning module keeps an averaged copy ``net_swa`` of its ``net`` (frozen, never trained)
and a buffer ``swa_n_averaged``; both are in the module's state dict, so checkpoints hold
``net.*`` and ``net_swa.*`` weights and a resumed run continues the same average.
:class:`SWACallback` folds the live weights in at the end of epochs ``swa_epoch_start``,
``swa_epoch_start + swa_freq``, ... (0-based epoch indices), right after the epoch's last
optimizer step and before that epoch's validation, so ``swa_*`` metrics always describe the
current average.

PaSST uses LayerNorm only; networks with BatchNorm would also need their running statistics
recomputed for the averaged weights, which is not done here.
"""

from __future__ import annotations

import copy
import logging

import pytorch_lightning as pl
import torch
import torch.nn as nn

_logger = logging.getLogger(__name__)


def make_swa_copy(net: nn.Module) -> nn.Module:
    """A frozen deep copy of ``net`` to hold the average (created before any ``torch.compile``)."""
    swa = copy.deepcopy(net)
    for p in swa.parameters():
        p.requires_grad_(False)
    return swa


@torch.no_grad()
def average_into(avg: nn.Module, net: nn.Module, n_averaged: int) -> None:
    """Fold ``net`` into the running mean ``avg`` of ``n_averaged`` earlier snapshots.

    ``n_averaged == 0`` copies ``net``. Floating-point buffers are copied (not averaged), others
    are copied as they are.
    """
    avg_params = dict(avg.named_parameters())
    for name, p in net.named_parameters():
        target = avg_params[name]
        if n_averaged == 0:
            target.copy_(p)
        else:
            target.add_((p.detach().to(target.dtype) - target) / (n_averaged + 1))
    avg_buffers = dict(avg.named_buffers())
    for name, b in net.named_buffers():
        if name in avg_buffers:
            avg_buffers[name].copy_(b)


def is_swa_epoch(epoch: int, swa_epoch_start: int, swa_freq: int) -> bool:
    """Whether the weights after (0-based) ``epoch`` are folded into the average."""
    if swa_freq < 1:
        raise ValueError(f"swa_freq must be >= 1, got {swa_freq}")
    return epoch >= swa_epoch_start and (epoch - swa_epoch_start) % swa_freq == 0


class SWACallback(pl.Callback):
    """Updates ``pl_module.net_swa`` on the schedule of :func:`is_swa_epoch`.

    The module must have ``net``, ``net_swa`` and a long buffer ``swa_n_averaged`` (see
    :class:`helpers.training.module.AudioModule`).
    """

    def __init__(self, swa_epoch_start: int = 50, swa_freq: int = 5) -> None:
        is_swa_epoch(0, swa_epoch_start, swa_freq)  # validates swa_freq early
        self.swa_epoch_start = swa_epoch_start
        self.swa_freq = swa_freq
        self._done_epoch: int | None = None

    def _maybe_average(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._done_epoch == epoch or not is_swa_epoch(epoch, self.swa_epoch_start, self.swa_freq):
            return
        if getattr(pl_module, "net_swa", None) is None:
            raise RuntimeError("SWACallback needs a module built with swa=True (it has no net_swa)")
        n = int(pl_module.swa_n_averaged)
        average_into(pl_module.net_swa, pl_module.net, n)
        pl_module.swa_n_averaged.fill_(n + 1)
        self._done_epoch = epoch
        _logger.info("SWA: epoch %d folded into the average (%d snapshots)", epoch, n + 1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # after the last optimizer step of the epoch, before its validation runs
        if batch_idx + 1 >= trainer.num_training_batches:
            self._maybe_average(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # fallback when the number of batches is unknown (iterable datasets)
        self._maybe_average(trainer, pl_module)
