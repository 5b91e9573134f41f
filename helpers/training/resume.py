"""Resuming a killed run exactly where it stopped, inside an epoch too, with the same results.

Lightning's checkpoints restore the weights, the optimizer, the LR schedule, the module's
buffers (the SWA average and its counters) and the loop counters (epoch, step, batch in the
epoch). What they do not restore, and these callbacks do:

* :class:`TrainingPosition` stores the epoch and the batches of it already trained, and on
  resume hands them to the training sampler (:class:`helpers.data.resumable.ResumePoint`): the
  epoch continues with the clips it had not seen, in their order. (Lightning alone restarts the
  epoch's sampler from its first clip while counting on from the saved batch, so after a
  mid-epoch resume some clips are seen twice and others never.)
* :class:`StepSeeds` seeds torch's generators at the start of every training step from
  ``(seed, rank, epoch, batch)``: mixup, patchout, SpecAugment and the mel shifts of a step are
  the same whether or not the run was interrupted before it, whatever else drew random
  numbers in between (validation, a restart).
* :class:`StepCheckpoint` writes ``last.ckpt`` every N training steps inside epochs (an option:
  ``checkpointing.last_every_n_steps``), so a kill loses at most N steps, not an epoch.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from helpers.data.resumable import ResumePoint, derived_seeds


class TrainingPosition(pl.Callback):
    """Saves ``(epoch, batches done)`` of the next training batch; on resume, starts the sampler there.

    Args:
        resume_point: the training sampler's start (the data module's ``resume_point``).
    """

    def __init__(self, resume_point: ResumePoint) -> None:
        self.resume_point = resume_point
        self.epoch, self.batch = 0, 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's advice for mid-epoch resumes does not apply: the sampler resumes here
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # callbacks run before checkpoint callbacks (Lightning orders those last): a checkpoint of
        # this hook already counts this batch as done
        self.epoch, self.batch = trainer.current_epoch, batch_idx + 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch, self.batch = trainer.current_epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # restored before Lightning asks for the training loader, which takes the point
        self.epoch, self.batch = int(state_dict["epoch"]), int(state_dict["batch"])
        self.resume_point.epoch, self.resume_point.batch = self.epoch, self.batch


class StepSeeds(pl.Callback):
    """Seeds torch (CPU and accelerators) at every training step from ``(seed, rank, epoch, batch)``.

    Args:
        seed: the run's seed.
        per_rank: DDP ranks draw differently (the rank is part of the key); False: all ranks
            draw the same numbers, as the original framework did.
    """

    def __init__(self, seed: int, per_rank: bool = True) -> None:
        self.seed = int(seed)
        self.per_rank = per_rank

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        rank = trainer.global_rank if self.per_rank else 0
        # host-side generator states only: no accelerator synchronisation
        torch.manual_seed(derived_seeds(self.seed, (rank, trainer.current_epoch, batch_idx), 1)[0])


class StepCheckpoint(Checkpoint):
    """Writes ``path`` (the run's ``last.ckpt``) every ``every_n_steps`` training steps inside epochs.

    The end-of-epoch ``last.ckpt`` comes from a ModelCheckpoint; an epoch's last batch writes no
    step checkpoint (the end-of-epoch one follows after validation, and a step checkpoint there
    would resume into the epoch's end without validating it). As a ``Checkpoint`` this callback
    runs after the others in every hook (Lightning orders checkpoint callbacks last), so the
    position and the guards have seen the step before it is saved.
    """

    def __init__(self, path: str | os.PathLike, every_n_steps: int) -> None:
        if every_n_steps < 1:
            raise ValueError(f"checkpointing.last_every_n_steps must be >= 1, got {every_n_steps}")
        self.path = os.fspath(path)
        self.every_n_steps = int(every_n_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0 and batch_idx + 1 < trainer.num_training_batches:
            trainer.save_checkpoint(self.path, weights_only=False)
