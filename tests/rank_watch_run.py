"""Test helper: two DDP processes (gloo, CPU) train a toy model with the rank watch; rank 1 freezes.

    python tests/rank_watch_run.py OUT

Lightning starts rank 1 by running this script again. At step 5 rank 1 stops itself with
SIGSTOP: its sockets stay open, so rank 0's next collective never fails (as NCCL within one
machine waits for a dead peer); only the watch can end rank 0. ``OUT/run/run.json`` stands for
rank 0's sacred run (RUNNING); rank 1 writes its pid to ``OUT/rank1.pid`` and the time it froze
to ``OUT/frozen``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers.experiment.rank_watch import SACRED_RUN_DIRS_ENV, RankWatch

ROOT = Path(__file__).resolve().parents[1]


class Toy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class FreezeRankOne(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and batch_idx == 5:
            (self.out / "rank1.pid").write_text(str(os.getpid()))
            (self.out / "frozen").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGSTOP)


def main() -> None:
    out = Path(sys.argv[1])
    if "LOCAL_RANK" not in os.environ:  # rank 0, before it launches rank 1
        (out / "run").mkdir(parents=True, exist_ok=True)
        (out / "run" / "run.json").write_text(json.dumps({"status": "RUNNING"}))
        os.environ[SACRED_RUN_DIRS_ENV] = str(out / "run")
    data = DataLoader(TensorDataset(torch.randn(400, 4)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=pl.strategies.DDPStrategy(),
                         callbacks=[RankWatch(silent_s=3.0, grace_s=2.0), FreezeRankOne(out)], logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Toy(), data)


if __name__ == "__main__":
    main()
