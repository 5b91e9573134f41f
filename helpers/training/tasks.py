"""What a dataset is trained for: its loss, its prediction and its metrics.

The shared :class:`helpers.training.module.AudioModule` takes a task object, so an experiment
script only picks one: AudioSet and FSD50K are :class:`MultiLabelTask`, ESC-50 is
:class:`MultiClassTask`, OpenMIC-2018 (partially annotated) is :class:`MaskedMultiLabelTask`.
A new task only needs the members of :class:`Task`.

Batch mixup mixes the inputs of a training batch (``x_i <- lam_i x_i + (1 - lam_i) x_perm[i]``,
:mod:`helpers.training.mixup`); the module hands ``perm`` and ``lam`` to :meth:`Task.loss`, so each
task mixes its own targets the way its loss needs them.

Knowledge distillation (:mod:`helpers.training.distill`) asks the task how it turns logits into
probabilities (:attr:`Task.activation`) and for its distillation loss against a teacher's
probabilities at temperature ``T`` (:meth:`Task.distillation_loss`): binary cross-entropy for
multi-label tasks (masked by the annotations for OpenMIC), the Kullback-Leibler divergence of the
softmax for one class per clip; both scaled by ``T**2`` (Hinton et al., 2015), so their gradients
keep their size when ``T`` changes (at ``T = 1``, the original's and EfficientAT's value, they are
the plain losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from helpers.training.metrics import accuracy, multilabel_metrics
from helpers.training.mixup import mix


class Task(Protocol):
    """The interface the Lightning module relies on."""

    #: the metric (without prefix) that picks the best checkpoint, e.g. ``"mAP"`` -> ``val_mAP``
    monitor: str
    #: ``"max"`` or ``"min"`` for :attr:`monitor`
    monitor_mode: str
    #: what turns logits into scores (``"sigmoid"``: labels independent; ``"softmax"``: one class per
    #: clip): at inference (stored in every checkpoint, so inference.py needs no flag) and when a
    #: teacher's probabilities are matched
    activation: str

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor | None = None,
             lam: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of a batch; with ``perm``/``lam`` the inputs were mixed up and the targets are mixed alike."""

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Metrics of a whole evaluation set, computed where the tensors are (the accelerator)."""

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        """Raise ValueError when a dataset's targets cannot be used with ``n_classes`` outputs."""

    def distillation_loss(self, logits: torch.Tensor, soft: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> torch.Tensor:
        """Per-example loss ``[B]`` of ``logits`` against a teacher's probabilities ``soft`` at ``temperature``."""


def _bce_at(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Element-wise ``T**2 * BCE(logits / T, soft)``."""
    scale = temperature * temperature
    return scale * F.binary_cross_entropy_with_logits(logits.float() / temperature, soft.float(), reduction="none")


@dataclass(frozen=True)
class MultiLabelTask:
    """Multi-hot targets, binary cross-entropy on logits, mAP / ROC-AUC."""

    monitor: str = "mAP"
    monitor_mode: str = "max"
    activation: str = "sigmoid"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor | None = None,
             lam: torch.Tensor | None = None) -> torch.Tensor:
        targets = targets.float() if perm is None else mix(targets.float(), perm, lam)
        return F.binary_cross_entropy_with_logits(logits.float(), targets)

    def distillation_loss(self, logits: torch.Tensor, soft: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> torch.Tensor:
        return _bce_at(logits, soft, temperature).mean(dim=-1)

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
    activation: str = "softmax"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor | None = None,
             lam: torch.Tensor | None = None) -> torch.Tensor:
        if perm is not None:
            # cross-entropy is linear in the target distribution: mixing one-hot targets gives
            # lam * CE(y_i) + (1 - lam) * CE(y_perm[i]), the original's mixup loss
            if not targets.is_floating_point():
                targets = F.one_hot(targets.long(), logits.shape[-1])
            targets = mix(targets.float(), perm, lam)
        # float targets are (mixed-up) class probabilities; cross_entropy accepts both forms
        targets = targets.float() if targets.is_floating_point() else targets.long()
        return F.cross_entropy(logits.float(), targets)

    def distillation_loss(self, logits: torch.Tensor, soft: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> torch.Tensor:
        # KL(soft || softmax(logits / T)); xlogy: classes the teacher gives 0 add nothing
        soft = soft.float()
        log_student = F.log_softmax(logits.float() / temperature, dim=-1)
        kl = (torch.special.xlogy(soft, soft) - soft * log_student).sum(dim=-1)
        return temperature * temperature * kl

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"acc": accuracy(logits.float(), targets)}

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        if targets.dim() == 0:
            if not 0 <= int(targets) < n_classes:
                raise ValueError(f"class index {int(targets)} is outside 0..{n_classes - 1}")
        elif targets.dim() != 1 or targets.shape[0] != n_classes:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not fit n_classes={n_classes}")


@dataclass(frozen=True)
class MaskedMultiLabelTask:
    """Partially annotated multi-label data (OpenMIC-2018): a target is ``C`` labels then ``C`` masks.

    A label counts as positive above 0.5; a mask of 0 means "not annotated". The loss is the binary
    cross-entropy multiplied by the example's own mask (mixed-up targets mix the labels, each
    example keeps its mask, as the original); the metrics are per-class AP and ROC-AUC with the
    masks as weights, averaged over the classes (``mAP``, ``roc_auc``).
    """

    monitor: str = "mAP"
    monitor_mode: str = "max"
    activation: str = "sigmoid"

    @staticmethod
    def split(targets: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels > 0.5, masks)`` of ``[B, 2C]`` targets, both float ``[B, C]``; ``[B, C]`` targets
        (no masks, e.g. the speed test's) count every label as annotated."""
        labels = (targets[..., :n_classes] > 0.5).float()
        masks = targets[..., n_classes:].float() if targets.shape[-1] == 2 * n_classes else torch.ones_like(labels)
        return labels, masks

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor | None = None,
             lam: torch.Tensor | None = None) -> torch.Tensor:
        labels, masks = self.split(targets, logits.shape[-1])
        if perm is not None:
            labels = mix(labels, perm, lam)
        return (F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none") * masks).mean()

    def distillation_loss(self, logits: torch.Tensor, soft: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> torch.Tensor:
        # as the label loss: only the annotated labels count (each example keeps its own masks)
        _, masks = self.split(targets, logits.shape[-1])
        return (_bce_at(logits, soft, temperature) * masks).mean(dim=-1)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        labels, masks = self.split(targets, logits.shape[-1])
        return multilabel_metrics(torch.sigmoid(logits.float()), labels, weights=masks)

    def check_targets(self, targets: torch.Tensor, n_classes: int) -> None:
        if targets.dim() != 1 or targets.shape[0] != 2 * n_classes:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not fit n_classes={n_classes}: expected "
                             f"{2 * n_classes} values, {n_classes} labels followed by {n_classes} masks")

