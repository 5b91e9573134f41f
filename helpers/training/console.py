"""The story of a run on the console: one line per validation.

``epoch 3/9  train_loss 0.4123  val_acc 0.7500  val_loss 0.6100  swa_val_acc 0.7000  swa_val_loss 0.6500
lr 1.0e-05  12.3 s``: the epoch, the training loss of the epoch, every metric of every evaluation
set (the SWA average's too, in the epochs that update it), the learning rate the epoch trained
with, and the epoch's time with its validation. Printed by global rank 0, through the progress bar
when there is one (so the bar is not torn).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl


class ValidationReport(pl.Callback):
    """After every epoch that validated, one line with what happened (module docstring).

    Args:
        eval_sets: the names of the evaluation sets (their metrics are ``<name>_*`` and ``swa_<name>_*``).
    """

    def __init__(self, eval_sets: Sequence[str] = ("val",)) -> None:
        self.prefixes = tuple(p for name in eval_sets for p in (f"{name}_", f"swa_{name}_"))
        self._started = time.monotonic()
        self._validated = False
        #: every line printed (for the end of the run and the tests)
        self.lines: list[str] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()
        self._validated = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._validated:
            return
        # on every rank: reading the epoch's training loss reduces it over the ranks
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        line = self.line(trainer.current_epoch, trainer.max_epochs, metrics, _learning_rate(trainer),
                         time.monotonic() - self._started)
        self.lines.append(line)
        if trainer.is_global_zero:
            bar = trainer.progress_bar_callback
            if bar is not None and getattr(bar, "is_enabled", False):
                bar.print(line)
            else:
                print(line, flush=True)

    def line(self, epoch: int, max_epochs: int | None, metrics: dict[str, float], lr: float | None,
             seconds: float) -> str:
        """The line of one validated epoch, numbered from 0 as the progress bar and the checkpoint names do."""
        parts = [f"epoch {epoch}" + (f"/{max_epochs - 1}" if max_epochs and max_epochs > 0 else "")]
        if "train_loss_epoch" in metrics:
            parts.append(f"train_loss {metrics['train_loss_epoch']:.4g}")
        shown = [k for k in sorted(metrics) if k.startswith(self.prefixes) and not k.startswith("swa_")]
        shown += [k for k in sorted(metrics) if k.startswith(self.prefixes) and k.startswith("swa_")]
        parts += [f"{key} {metrics[key]:.4g}" for key in shown]
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts.append(f"{seconds:.1f} s")
        return "  ".join(parts)


def _learning_rate(trainer: pl.Trainer) -> float | None:
    """The learning rate of the first parameter group (the epoch's: the scheduler steps after this hook)."""
    optimizers: Any = getattr(trainer, "optimizers", None) or []
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
