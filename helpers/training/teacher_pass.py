"""One pass of a teacher over a training set, for the ``store_teacher_logits`` command (Lightning ``predict``).

Jobs are ``(clip, draw)`` pairs, numbered ``clip * D + draw`` (``D = max(R, 1)``). A job's item is
loaded under torch's generator seeded from ``(seed, clip, draw)`` alone, so it is the same in any
process, in any order, after any restart:

* ``R = 0``: the clip without augmentation (:func:`helpers.data.draws.neutral`), the front end in
  eval mode: what evaluation feeds a network;
* ``R > 0``: the training augmentations drawn and recorded (:func:`helpers.data.draws.recording`),
  and the front end's band shift and masks drawn per clip (``AugmentMelSTFT.draw_augment``).

:class:`TeacherPass` feeds the jobs of this process' chunks (:class:`helpers.data.teacher_store.StoreWork`)
through the mel front end (:func:`helpers.training.module.mel_forward`, the same function the
student's replay goes through) and the teacher, in the teacher's own precision, and hands the
logits with the recorded draws to the store, which writes every finished chunk.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from helpers.data import draws
from helpers.data.loaders import make_loader
from helpers.data.resumable import derived_seeds
from helpers.data.teacher_store import TAPE_FIELDS, StoreWork, encode_tape
from helpers.training.module import mel_forward
from models.precision import autocast_dtype, decide_precision
from models.preprocess import AugmentMelSTFT

__all__ = ["TeacherJobs", "TeacherPass", "STREAM"]

#: the key of the random stream of the stored draws (apart from training's)
STREAM = 0x7EAC


class TeacherJobs(Dataset):
    """The teacher's input of every job, with what made it.

    Args:
        dataset: the (augmented) training set, items ``(wave [1, n], name, target)``.
        names: its clip names (row order of the store).
        mel: the front end whose augmentation is drawn (``R > 0``).
        draws: recorded draws per clip (0: the clean clip).
        seed: the seed of every draw.
    """

    def __init__(self, dataset: Dataset, names: list[str], mel: AugmentMelSTFT, draws: int, seed: int) -> None:
        self.dataset, self.names, self.mel = dataset, list(names), mel
        self.draws, self.depth, self.seed = int(draws), max(int(draws), 1), int(seed)

    def __len__(self) -> int:
        return len(self.names) * self.depth

    def __getitem__(self, job: int) -> dict[str, Any]:
        row, draw = divmod(int(job), self.depth)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seeds(self.seed, (STREAM, row, draw), 1)[0])
            if self.draws:
                with draws.recording() as tape:
                    wave, name, _ = self.dataset[row]
                mel = self.mel.draw_augment(1, np.shape(wave)[-1])[0]
            else:
                with draws.neutral() as tape:
                    wave, name, _ = self.dataset[row]
                mel = torch.zeros(6, dtype=torch.long)
        return {"wave": torch.as_tensor(wave), "row": row, "draw": draw, "valid": name == self.names[row],
                "mel": mel, **encode_tape(tape.values)}


class TeacherPass(pl.LightningModule):
    """Runs ``teacher`` on the pending jobs of this process and stores the results.

    Args:
        teacher: ``forward(spec) -> (logits, embedding)``.
        mel: the front end (eval mode for clean clips; recorded draws applied otherwise).
        jobs: the inputs (:class:`TeacherJobs`).
        work: the store being written.
        loader_cfg: DataLoader arguments (the experiment's ``datasets.test``).
        precision: the teacher's precision (``auto``: the fastest the hardware runs natively).
    """

    def __init__(self, teacher: nn.Module, mel: AugmentMelSTFT, jobs: TeacherJobs, work: StoreWork,
                 loader_cfg: dict[str, Any], precision: str = "auto") -> None:
        super().__init__()
        self.teacher, self.mel = teacher.requires_grad_(False), mel
        self.jobs, self.work = jobs, work
        self.loader_cfg = dict(loader_cfg)
        self.precision_request = precision
        self.dtype_: torch.dtype | None = None
        self.pending = 0

    def predict_dataloader(self):
        chunks = self.work.pending_chunks(self.trainer.global_rank, self.trainer.world_size)
        order = self.work.jobs(chunks)
        self.pending = len(chunks)
        return make_loader(self.jobs, {**self.loader_cfg, "shuffle": False}, sampler=order)

    def setup(self, stage: str) -> None:
        # the results go to the store, not back through predict(): nothing to warn about
        warnings.filterwarnings("ignore", message="predict returned None")

    def on_predict_start(self) -> None:
        self.dtype_ = autocast_dtype(decide_precision(self.device, self.precision_request, "infer"))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        spec = mel_forward(self.mel, batch["wave"], batch["mel"] if self.jobs.draws else None)
        dtype = self.dtype_
        with torch.autocast(spec.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits, _ = self.teacher(spec)
        host = {k: v.cpu().numpy() for k, v in batch.items() if k != "wave"}
        self.work.add(host["row"], host["draw"], host["valid"], logits.float().cpu().numpy(),
                      {name: host[name] for name in TAPE_FIELDS}, host["mel"])
