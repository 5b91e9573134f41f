"""SIGTERM under DDP: every rank stops after the same step, agreed about once a second, not every step.

pytorch-lightning 2.6.6 broadcasts rank 0's SIGTERM flag and reads it back with ``.item()`` at the
start of every training step under DDP (``_TrainingEpochLoop._broadcast_sigterm_tensor``; upstream
issue #21487): one collective and one host sync per step, which a GPU waits for. Its signal
handler also broadcasts from inside the handler (a collective the other ranks never match), and
a rank that got the signal raises on its own after its current step, so ranks that got it at
different steps, or a rank other than rank 0 alone (one machine preempted), leave the others
waiting in a collective.

:func:`agree_on_sigterm` changes one Trainer, narrowly:

* the handler only notes the signal (and forwards it to the processes this one launched, as
  Lightning does);
* at agreed steps, the same on every rank, one all-reduce (max) of ``[noted, -proposed interval]``
  decides: if any rank got SIGTERM, all stop after that step with Lightning's ``SIGTERMException``;
  otherwise the next check comes after the smallest interval any rank proposed, the steps it
  takes to spend about :data:`CHECK_EVERY_S` seconds (at most :data:`MAX_STEPS_BETWEEN_CHECKS`).
  A SIGTERM is thus acted on within about a second whatever the step time (PaSST-S: every ~75
  steps on an H100, every step on a CPU), and steps between checks have no collective and no
  host read.

In one process nothing changes: the handler sets Lightning's flag, which stops after the step.
"""

from __future__ import annotations

import logging
import math
import time
import types

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

_logger = logging.getLogger(__name__)

#: seconds of training between two SIGTERM checks under DDP
CHECK_EVERY_S = 1.0
#: the most steps between two checks (very fast steps)
MAX_STEPS_BETWEEN_CHECKS = 1000


def _distributed(trainer: pl.Trainer) -> bool:
    return dist.is_available() and dist.is_initialized() and trainer.world_size > 1


def _note_sigterm(connector, signum, frame) -> None:
    """Lightning's ``_sigterm_notifier_fn`` without the broadcast inside the signal handler."""
    trainer = connector.trainer
    _logger.info("rank %d received SIGTERM", trainer.global_rank)
    if not connector.received_sigterm and not connector.sigterm_noted:
        launcher = trainer.strategy.launcher
        if launcher is not None:
            launcher.kill(signum)
    connector.sigterm_noted = True
    if not _distributed(trainer):
        connector.received_sigterm = True  # one process: Lightning stops after this step


def _check_sigterm(loop) -> None:
    """Replaces ``_broadcast_sigterm_tensor``: a collective only at the agreed steps (module docstring)."""
    trainer = loop.trainer
    step = loop.batch_progress.total.ready
    now = time.monotonic()
    if step < loop.next_sigterm_check:
        return
    last = loop.last_sigterm_check  # (time, step) of this run's previous check, None before the first
    steps = 0 if last is None else step - last[1]
    rate = steps / max(now - last[0], 1e-9) if steps > 0 else 0.0  # steps per second since then
    proposal = max(1, min(MAX_STEPS_BETWEEN_CHECKS, math.floor(CHECK_EVERY_S * rate)))
    noted = float(trainer._signal_connector.sigterm_noted)
    agreed = torch.tensor([noted, -float(proposal)], device=trainer.strategy.root_device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    stop, interval = agreed.tolist()
    loop.next_sigterm_check, loop.last_sigterm_check = step + int(-interval), (time.monotonic(), step)
    if stop:
        trainer._signal_connector.received_sigterm = True
        dist.barrier()
        raise SIGTERMException()


def agree_on_sigterm(trainer: pl.Trainer) -> None:
    """Install the SIGTERM handling of the module docstring on ``trainer`` (before ``fit``)."""
    connector = trainer._signal_connector
    connector.sigterm_noted = False
    connector._sigterm_notifier_fn = types.MethodType(_note_sigterm, connector)
    loop = trainer.fit_loop.epoch_loop
    loop.next_sigterm_check, loop.last_sigterm_check = 0, None
    loop._broadcast_sigterm_tensor = types.MethodType(_check_sigterm, loop)
