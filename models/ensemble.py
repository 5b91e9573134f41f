"""Ensembles of PaSST networks: the mean of their logits (the released ensembles reach mAP .4956).

:func:`models.build.get_ensemble_model` builds one from registry names or local checkpoints; the
original's named ensembles are :data:`models.registry.ENSEMBLES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class PaSSTEnsemble(nn.Module):
    """Averages the logits of several members (each may have its own strides).

    ``forward`` returns ``(mean logits, concatenated member embeddings)``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.models = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embeddings = zip(*(m(x) for m in self.models), strict=True)
        return torch.stack(logits).mean(dim=0), torch.cat(embeddings, dim=-1)

    # timm's model API where it means something for a mean of networks: each member's tokens and
    # heads have their own sizes, so forward_features/forward_head stay with the members

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The members' tokens and positional encodings, by their names in the ensemble."""
        return {f"models.{i}.{name}" for i, m in enumerate(self.models) for name in m.no_weight_decay()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing in every member (:meth:`models.passt.PaSST.set_grad_checkpointing`)."""
        for m in self.models:
            m.set_grad_checkpointing(enable)

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` in every member; 0: the output is the mean of their embeddings
        (members of one width)."""
        for m in self.models:
            m.reset_classifier(num_classes)

