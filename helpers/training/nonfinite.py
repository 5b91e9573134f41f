"""Stopping on NaN/inf without waiting for the accelerator every step, and without saving NaN weights.

:class:`NonFiniteGuard` looks at the gradients of every optimizer step on the device (one
fused pass, as the fp16 loss scaler does; no value is read back to the host):

* the step's "non-finite" flag goes to the optimizer as ``found_inf``, the attribute through which
  PyTorch's fused Adam/AdamW skip an update on the device (what ``GradScaler`` uses); a step
  with a NaN/inf loss or gradient therefore changes neither the weights nor the optimizer state.
  Gradients are checked after DDP's all-reduce, so every rank skips the same steps;
* the first such step is remembered in a device tensor, read every ``check_every`` steps,
  before every step checkpoint and at every epoch end (where a read happens anyway). On a hit,
  training stops with :class:`NonFiniteError` naming the step, after saving the last good state
  to ``last.ckpt`` (the weights never took a non-finite update);
* with fp16 loss scaling (``16-mixed`` on GPUs) an overflowing step is routine: the scaler skips
  it and lowers the scale. Such steps are counted and logged as ``skipped_steps``, not fatal.

Whatever the precision, no checkpoint is written whose weights hold a NaN or inf
(checked when saving).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf losses, gradients or weights."""


def nonfinite_flag(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A float32 device scalar: 1.0 if any element of ``tensors`` is NaN or inf, else 0.0 (no host read)."""
    found = torch.zeros((), dtype=torch.float32, device=tensors[0].device)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), group in groups.items():  # the kernel takes one device and dtype at a time
        part = torch.zeros((), dtype=torch.float32, device=device)
        # GradScaler's kernel: sets `part` when it meets a non-finite value (multiplying by 1 changes nothing)
        torch._amp_foreach_non_finite_check_and_unscale_(group, part, torch.ones((), device=device))
        found = torch.maximum(found, part.to(found.device, non_blocking=True))
    return found


def first_nonfinite_tensor(state_dict: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``state_dict`` holding NaN/inf, or None."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


class NonFiniteGuard(pl.Callback):
    """See the module docstring.

    Args:
        last_checkpoint: where the last good state is saved when training stops (``last.ckpt``).
        check_every: read the flag every this many steps (None: ``trainer.log_every_n_steps``).
        checkpoint_every: steps between step checkpoints (the flag is read before each).
    """

    def __init__(self, last_checkpoint: str | Path | None, check_every: int | None = None,
                 checkpoint_every: int | None = None) -> None:
        self.last_checkpoint = last_checkpoint
        self.check_every = check_every
        self.checkpoint_every = checkpoint_every
        self._first_bad: torch.Tensor | None = None  # global step of the first non-finite step, -1: none
        self._skipped: torch.Tensor | None = None
        self._armed: torch.optim.Optimizer | None = None

    def _loss_scaling(self, trainer: pl.Trainer) -> bool:
        return getattr(trainer.precision_plugin, "scaler", None) is not None

    # ------------------------------------------------------------------------- on the device
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        found = nonfinite_flag(grads)
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=found.device)
            self._skipped = torch.zeros((), dtype=torch.long, device=found.device)
        step = torch.full((), trainer.global_step, dtype=torch.long, device=found.device)
        self._first_bad = torch.where((found > 0) & (self._first_bad < 0), step, self._first_bad)
        self._skipped = self._skipped + found.long()
        if not self._loss_scaling(trainer) and getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = found  # the fused update is skipped on the device when it is 1
            self._armed = optimizer

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._armed is not None:
            del self._armed.found_inf
            self._armed = None
        if self._skipped is None:
            return
        if self._loss_scaling(trainer):
            pl_module.log("skipped_steps", self._skipped.float(), on_step=True, on_epoch=False)
            return
        step = trainer.global_step
        every = self.check_every or trainer.log_every_n_steps or 1
        if step % every == 0 or (self.checkpoint_every and step % self.checkpoint_every == 0):
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # before the end-of-epoch checkpoints (Lightning runs checkpoint callbacks last)
        if not self._loss_scaling(trainer):
            self._check(trainer)

    # ------------------------------------------------------------------------------ the host
    def _check(self, trainer: pl.Trainer) -> None:
        """Read the flag (one host read); on a hit, save the last good state and stop."""
        if self._first_bad is None:
            return
        first_bad = int(self._first_bad)
        if first_bad < 0:
            return
        where = f"at training step {first_bad} (epoch {trainer.current_epoch}; found at step {trainer.global_step})"
        skips_on_device = all(getattr(opt, "_step_supports_amp_scaling", False) for opt in trainer.optimizers)
        if skips_on_device and self.last_checkpoint is not None:
            # refused by on_save_checkpoint if the weights are not finite after all
            trainer.save_checkpoint(self.last_checkpoint, weights_only=False)
            kept = (f"{int(self._skipped)} step(s) with NaN/inf were skipped, never applied; the weights and "
                    f"optimizer state were saved to {self.last_checkpoint} (step {trainer.global_step})")
        else:
            kept = ("the weights may hold NaN/inf now and were not saved; the last checkpoint written before "
                    "is the last good state")
        raise NonFiniteError(
            f"The loss or the gradients became NaN/inf {where}: {kept}. Lower the learning rate (lr=...), "
            f"check the data, or use fp32 (trainer.precision=32), then resume with ckpt_path=<that checkpoint>.")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        bad = first_nonfinite_tensor(checkpoint["state_dict"])
        if bad is not None:
            raise NonFiniteError(
                f"The weights hold NaN/inf ({bad}) at training step {trainer.global_step}; that checkpoint was not "
                "written and the last one written before is the last good state. Lower the learning rate "
                "(lr=...) or use fp32 (trainer.precision=32), then resume with ckpt_path=<that checkpoint>.")
