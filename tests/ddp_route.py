"""Test helper: ``ex_audioset.py`` as one process of a multi-process launch, recording what its rank trains.

    python tests/ddp_route.py <ex_audioset.py arguments>

Each route starts it the way it starts ``ex_audioset.py`` (``DDP=N``, ``trainer.devices=N``,
torchrun, processes with SLURM's variables); the processes Lightning launches from it run it
again. The environment says what to do:

* ``PASST_TEST_RECORD=<folder>``: every rank writes ``<folder>/rank<r>-pid<pid>.json`` (its rank,
  the world size, its own seed and the seed it trained with, and the names of the clips of every
  training batch it trained, per epoch and batch) and, when training ends, ``weights-rank<r>.pt``
  (the module's state dict).
* ``PASST_TEST_OWN_SEED=1``: every process that is not global rank 0 replaces the command line's
  ``seed=`` with a random one, as if the command line gave none: the ranks start with different
  seeds, and must train with rank 0's. A resume (``ckpt_path=``) leaves ``seed=`` out on those
  processes instead: a resume typed without a seed takes the checkpoint's (one with another seed
  is refused, on every rank alike).
* ``PASST_TEST_STOP=<rank>:<step>:kill|term``: at the start of training step ``<step>``, once the
  checkpoints asked for before it are on the disk, that global rank kills itself with SIGKILL
  (``kill``) or sends itself SIGTERM (``term``; SIGTERM is then checked at every step). It writes
  the time to ``<record folder>/stopped``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from helpers.experiment import commands, ddp
from helpers.training import sigterm

ROOT = Path(__file__).resolve().parents[1]


class Recorder(pl.Callback):
    """What this rank trained (module docstring); last in the callbacks, after the ranks agreed on the seed."""

    def __init__(self, folder: Path, own_seed: int, stop: str | None) -> None:
        self.folder, self.own_seed = folder, own_seed
        self.stop = stop.split(":") if stop else None
        self.record: dict = {}

    def setup(self, trainer, pl_module, stage):
        self.rank = trainer.global_rank
        self.record = {"rank": self.rank, "world_size": trainer.world_size, "own_seed": self.own_seed,
                       "seed": trainer.datamodule.seed, "batches": {}}
        self._write()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stop and int(self.stop[0]) == self.rank and int(self.stop[1]) == trainer.global_step:
            trainer.strategy.checkpoint_io.wait()
            (self.folder / "stopped").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL if self.stop[2] == "kill" else signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.record["batches"][f"{trainer.current_epoch}:{batch_idx}"] = list(batch[1])
        self._write()

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), self.folder / f"weights-rank{self.rank}.pt")

    def _write(self):
        (self.folder / f"rank{self.rank}-pid{os.getpid()}.json").write_text(json.dumps(self.record))


def main() -> None:
    folder = Path(os.environ["PASST_TEST_RECORD"])
    folder.mkdir(parents=True, exist_ok=True)
    argv = list(sys.argv)
    own_seed = int(next(arg for arg in argv if arg.startswith("seed=")).split("=")[1])
    if os.environ.get("PASST_TEST_OWN_SEED") and not ddp.is_global_rank_zero():
        if any(arg.startswith("ckpt_path=") for arg in argv):
            argv = [arg for arg in argv if not arg.startswith("seed=")]  # the checkpoint's seed: own_seed
        else:
            own_seed = random.randrange(2**31)
            argv = [f"seed={own_seed}" if arg.startswith("seed=") else arg for arg in argv]
    stop = os.environ.get("PASST_TEST_STOP")
    if stop and stop.endswith(":term"):
        sigterm.CHECK_EVERY_S = 0.0  # agree every step: the stop comes at a known step
    recorder = Recorder(folder, own_seed, stop)
    real_callbacks = commands.fault_tolerance_callbacks
    commands.fault_tolerance_callbacks = lambda *args, **kwargs: [*real_callbacks(*args, **kwargs), recorder]
    import ex_audioset
    from helpers.experiment.cli import run_cli

    # argv[0] stays this script (runpy would replace it): the processes Lightning launches run it too
    run_cli(ex_audioset.ex, argv)


if __name__ == "__main__":
    main()
