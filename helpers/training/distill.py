"""Knowledge distillation in the training step: ``loss = (1 - lambda) * label loss + lambda * distillation loss``.

The teacher's probabilities come from one of two places:

* offline: with the batch (element 3, ``[B, C + 1]``: probabilities and a weight, see
  :mod:`helpers.data.teacher_data`), from logits stored once by the ``store_teacher_logits``
  command. Batch mixup mixes them with the same ``perm`` and ``lam`` as the spectrograms and
  the labels; a mixed example keeps a weight of 1 only if both its clips have teacher targets.
  With consistent teaching the batch also carries the front end's recorded draws (element 4),
  which :meth:`Distillation.mel_draws` hands to the mel front end;
* online (:class:`OnlineTeacher`): the teacher runs on the student's own input, after the mel
  front end, SpecAugment and mixup (so its targets need no mixing), in eval mode, without
  gradients, in its own precision.

The distillation loss is the task's (:meth:`helpers.training.tasks.Task.distillation_loss`),
weighted per example (0 for clips without teacher targets) and averaged over the batch.
``lambda = 1`` trains on the teacher alone (label-free); the label loss is still logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from helpers.data.teacher_data import soft_targets
from helpers.training.mixup import mix
from helpers.training.tasks import Task
from models.precision import autocast_dtype, decide_precision

__all__ = ["Distillation", "OnlineTeacher"]


class OnlineTeacher:
    """A network that teaches on the student's input: eval mode, no gradients, its own precision.

    Deliberately not an ``nn.Module`` attribute of the student: its weights stay out of the
    student's checkpoints, optimizer, DDP and SWA; :meth:`place` moves it to the training device.

    Args:
        net: ``forward(spec [B, 1, n_mels, frames]) -> (logits, embedding)`` (a PaSST or an ensemble).
        precision: ``auto`` (the fastest the hardware runs natively), ``fp32``, ``bf16``, ``fp16``
            (:func:`models.precision.decide_precision` for inference).
    """

    def __init__(self, net: nn.Module, precision: str = "auto") -> None:
        self.net = net.eval().requires_grad_(False)
        self.precision = precision
        self.dtype: torch.dtype | None = None
        self.device = torch.device("cpu")

    def place(self, device: torch.device) -> None:
        """Move to ``device`` and decide the precision there."""
        self.device = torch.device(device)
        self.dtype = autocast_dtype(decide_precision(self.device, self.precision, "infer"))
        self.net.to(self.device).eval()

    @torch.no_grad()
    def logits(self, spec: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the teacher for a spectrogram batch (whatever autocast the caller runs in)."""
        with torch.autocast(spec.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            logits, _ = self.net(spec)
        return logits.float()


@dataclass
class Distillation:
    """What a distilling training step needs besides the task.

    Args:
        weight: lambda, the share of the distillation loss (0 < lambda <= 1).
        temperature: T of the teacher's and the student's probabilities.
        teacher: the online teacher; None: teacher targets come with the batch.
    """

    weight: float
    temperature: float = 1.0
    teacher: OnlineTeacher | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.weight <= 1.0:
            raise ValueError(f"kd.weight={self.weight}: the distillation loss' share lambda must be in (0, 1]")
        if self.temperature <= 0:
            raise ValueError(f"kd.temperature={self.temperature}: expected a positive number")

    @staticmethod
    def mel_draws(batch) -> torch.Tensor | None:
        """The front end's recorded draws (consistent teaching), or None."""
        return batch[4] if len(batch) > 4 else None

    def teacher_targets(self, task: Task, batch, spec: torch.Tensor, perm: torch.Tensor | None,
                        lam: torch.Tensor | None) -> torch.Tensor:
        """``[B, C + 1]``: the teacher's probabilities for the input ``spec`` and a weight per example."""
        if self.teacher is not None:
            soft = soft_targets(self.teacher.logits(spec), task.activation, self.temperature)
            return torch.cat([soft, torch.ones_like(soft[:, :1])], dim=1)
        teacher = batch[3].float()
        if perm is None:
            return teacher
        soft, weight = teacher[:, :-1], teacher[:, -1:]
        return torch.cat([mix(soft, perm, lam), torch.minimum(weight, weight[perm])], dim=1)

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor,
             perm: torch.Tensor | None = None, lam: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, label loss, distillation loss)`` of a batch (the task mixes its labels with ``perm``/``lam``)."""
        label_loss = task.loss(logits, targets, perm, lam)
        per_example = task.distillation_loss(logits, teacher[:, :-1], targets, self.temperature)
        kd_loss = (per_example * teacher[:, -1]).mean()
        if self.weight == 1.0:  # label-free: the labels do not even enter (they may be placeholders)
            return kd_loss, label_loss.detach(), kd_loss
        return (1.0 - self.weight) * label_loss + self.weight * kd_loss, label_loss, kd_loss
