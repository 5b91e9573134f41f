"""Validation and the end-of-epoch checkpoints every k epochs; SWA's epochs and the last one always.

An AudioSet "epoch" is 100k clips, about 14 s on 8 H100s at full speed, while validating the
20k evaluation clips and writing a ~1.4 GB checkpoint cost more than that. With
``trainer.check_val_every_n_epoch=k`` a run validates after the epochs ``k-1, 2k-1, ...``
(0-based), plus:

* every epoch that folds the weights into the SWA average (:func:`helpers.training.swa.is_swa_epoch`):
  the averaged network's ``swa_*`` metrics exist only in those epochs;
* the last epoch, whose metrics are the run's result.

:class:`ValidationSchedule` sets Lightning's ``check_val_every_n_epoch`` at the start of each
epoch, 1 for the epochs it validates and never for the others. Lightning's end-of-epoch
checkpoints (``last.ckpt``, the best one) follow: they are written at the end of validated
epochs only, so between them a crash loses up to k epochs unless
``checkpointing.last_every_n_steps`` also writes ``last.ckpt`` inside epochs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytorch_lightning as pl

#: Lightning's setting for "not in this epoch": (epoch + 1) % NEVER is never 0 in practice
NEVER = sys.maxsize


class ValidationSchedule(pl.Callback):
    """Validates every ``every_n_epochs`` epochs, in the epochs ``always(epoch)`` names, and in the last.

    Args:
        every_n_epochs: k of the module docstring (1: every epoch).
        always: epochs validated whatever k says (the SWA epochs); None: none.
    """

    def __init__(self, every_n_epochs: int = 1, always: Callable[[int], bool] | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"trainer.check_val_every_n_epoch must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.always = always

    def validates(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether the (0-based) ``epoch`` ends with a validation."""
        return ((epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == max_epochs
                or (self.always is not None and self.always(epoch)))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.check_val_every_n_epoch = 1 if self.validates(trainer.current_epoch, trainer.max_epochs) else NEVER
