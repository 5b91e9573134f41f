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
