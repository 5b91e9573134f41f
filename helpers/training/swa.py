"""Stochastic weight averaging (Izmailov et al. 2018) of the network next to the live one, on the original's schedule.

The Lightning module keeps an averaged copy ``net_swa`` of its ``net`` (frozen, never trained)
and the buffers ``swa_n_averaged`` and ``swa_last_epoch``; they are in the module's state dict,
so checkpoints hold ``net.*`` and ``net_swa.*`` weights and a resumed run continues the same
average.

Schedule, as the original framework's callback: with ``swa_epoch_start=s`` and ``swa_freq=f``
the weights are folded in at the START of the (0-based) epochs ``max(s - 1, 0)``, then every ``f``
epochs up to the last one, i.e. after ``s - 1, s - 1 + f, ...`` completed epochs; the weights
after the final epoch are not part of the average. For the AudioSet defaults (50, 5) and 130
epochs that is 17 snapshots, after 49, 54, ..., 129 epochs; for the downstream (2, 1) and 10
epochs, after 1, 2, ..., 9. The averaged network is validated (``swa_*`` metrics) only in the
epochs that updated it, as the original did.

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
    """Whether the weights at the start of (0-based) ``epoch`` are folded into the average."""
    if swa_freq < 1:
        raise ValueError(f"swa_freq must be >= 1, got {swa_freq}")
    first = max(swa_epoch_start - 1, 0)
    return epoch >= first and (epoch - first) % swa_freq == 0


class SWACallback(pl.Callback):
    """Updates ``pl_module.net_swa`` at the start of the epochs :func:`is_swa_epoch` names.

    The module must have ``net``, ``net_swa`` and the long buffers ``swa_n_averaged`` and
    ``swa_last_epoch`` (see :class:`helpers.training.module.AudioModule`); ``swa_last_epoch`` tells
    its validation whether the average changed in this epoch, and keeps a resumed run from
    folding the same epoch in twice.
    """

    def __init__(self, swa_epoch_start: int = 50, swa_freq: int = 5) -> None:
        is_swa_epoch(0, swa_epoch_start, swa_freq)  # validates swa_freq early
        self.swa_epoch_start = swa_epoch_start
        self.swa_freq = swa_freq

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not is_swa_epoch(epoch, self.swa_epoch_start, self.swa_freq):
            return
        if getattr(pl_module, "net_swa", None) is None:
            raise RuntimeError("SWACallback needs a module built with swa=True (it has no net_swa)")
        if int(pl_module.swa_last_epoch) == epoch:
            return  # resumed inside an epoch that was already folded in
        n = int(pl_module.swa_n_averaged)
        average_into(pl_module.net_swa, pl_module.net, n)
        pl_module.swa_n_averaged.fill_(n + 1)
        pl_module.swa_last_epoch.fill_(epoch)
        _logger.info("SWA: the weights after %d epochs folded into the average (%d snapshots)", epoch, n + 1)
