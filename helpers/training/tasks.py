"""What a dataset is trained for: its loss, its prediction and its metrics.

The shared :class:`helpers.training.module.AudioModule` takes a task object, so an experiment
script only picks one: AudioSet/FSD50K/OpenMIC are :class:`MultiLabelTask`, ESC-50 is
:class:`MultiClassTask`. A new task only needs the four members of :class:`Task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from helpers.training.metrics import accuracy, multilabel_metrics


class Task(Protocol):
    """The interface the Lightning module relies on."""

    #: the metric (without prefix) that picks the best checkpoint, e.g. ``"mAP"`` -> ``val_mAP``
    monitor: str
    #: ``"max"`` or ``"min"`` for :attr:`monitor`
    monitor_mode: str

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch; ``targets`` may be mixed up (soft)."""

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Metrics of a whole evaluation set, computed where the tensors are (the accelerator)."""

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        """Raise ValueError when a dataset's targets cannot be used with ``n_classes`` outputs."""


@dataclass(frozen=True)
class MultiLabelTask:
    """Multi-hot targets, binary cross-entropy on logits, mAP / ROC-AUC."""

    monitor: str = "mAP"
    monitor_mode: str = "max"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return multilabel_metrics(torch.sigmoid(logits.float()), targets)

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        if targets.dim() != 1 or targets.shape[0] != n_classes:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not fit n_classes={n_classes}")


@dataclass(frozen=True)
class MultiClassTask:
    """One class per clip (index or one-hot target), cross-entropy, accuracy."""

    monitor: str = "acc"
    monitor_mode: str = "max"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # float targets are (mixed-up) class probabilities; cross_entropy accepts both forms
        targets = targets.float() if targets.is_floating_point() else targets.long()
        return F.cross_entropy(logits.float(), targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"acc": accuracy(logits.float(), targets)}

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        if targets.dim() == 0:
            if not 0 <= int(targets) < n_classes:
                raise ValueError(f"class index {int(targets)} is outside 0..{n_classes - 1}")
        elif targets.dim() != 1 or targets.shape[0] != n_classes:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not fit n_classes={n_classes}")
