"""Test helper: two DDP processes (gloo, CPU) train the tiny module; every rank records, per training step,
the collectives it ran and the values it read back to the host.

    python tests/ddp_sync_run.py OUT

Started once; Lightning starts rank 1 by running this script again (as ``DDP=2`` and
``trainer.devices=2`` do). The loop is the one training runs: the DDP strategy of
``helpers.experiment.trainer.ddp_strategy``, the fault-tolerance callbacks, the SIGTERM
agreement of ``helpers.training.sigterm`` (with no check due in the watched steps), gradient
clipping with the fused optimizer, the default precision of this CPU. Steps 2..7 of 9 are
watched (DDP rebuilds its gradient buckets once, in step 1), each from the start of its batch to the start of the next (so the SIGTERM check at the
start of a step counts for the step before). Then, once, Lightning's own per-step SIGTERM check
is run as a probe, to show what the counters see of it. Each rank writes ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
from test_no_host_sync import HOST_READS, Clips, tiny_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from helpers.data.resumable import ResumePoint
from helpers.experiment.trainer import ddp_strategy
from helpers.training import sigterm
from helpers.training.nonfinite import NonFiniteGuard
from helpers.training.resume import StepSeeds, TrainingPosition
from models.precision import decide_precision

ROOT = Path(__file__).resolve().parents[1]

STEPS = 9


class Syncs(TorchDispatchMode):
    """Records collectives (the ``c10d`` ops, DDP's gradient all-reduce included) and host reads."""

    def __init__(self) -> None:
        super().__init__()
        self.collectives: list[str] = []
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "c10d":
            self.collectives.append(str(func))
        elif func.overloadpacket in HOST_READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


class WatchSteps(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.steps, self.mode = out, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.steps.append({"collectives": self.mode.collectives, "reads": self.mode.reads})
            self.mode = None
        if 2 <= batch_idx < STEPS - 1:  # step 1 rebuilds DDP's buckets (two broadcasts, once)
            self.mode = Syncs()
            self.mode.__enter__()

    def on_train_epoch_end(self, trainer, pl_module):
        probe = Syncs()
        with probe:  # what Lightning 2.6.6 does at the start of every step under DDP
            _TrainingEpochLoop._broadcast_sigterm_tensor(trainer.fit_loop.epoch_loop)
        result = {"steps": self.steps, "lightning_check": probe.collectives + probe.reads,
                  "precision": str(trainer.precision), "world_size": trainer.world_size}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    sigterm.CHECK_EVERY_S = 3600.0  # after the first two checks, the next is due after the run
    module = tiny_module()
    callbacks = [TrainingPosition(ResumePoint()), StepSeeds(0), NonFiniteGuard(None, check_every=50), WatchSteps(out)]
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=STEPS, limit_val_batches=0, accelerator="cpu", devices=2,
                         strategy=ddp_strategy({"bucket_cap_mb": 25, "bf16_compress": False, "timeout_s": 60}),
                         precision=decide_precision("cpu"), gradient_clip_val=0.5, log_every_n_steps=50,
                         enable_progress_bar=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         callbacks=callbacks, logger=False, enable_model_summary=False)
    sigterm.agree_on_sigterm(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few workers, few steps
        trainer.fit(module, DataLoader(Clips(), batch_size=1))  # 12 steps per rank


if __name__ == "__main__":
    main()
