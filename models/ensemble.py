"""Ensembles of PaSST networks: the mean of their logits (the released ensembles reach mAP .4956).

``get_ensemble_model([(arch, fstride, tstride), ...])`` builds the members with their released
weights, each with its own strides; a member may also be a dict of :func:`models.passt.get_model`
arguments plus ``checkpoint`` (a local file) and ``swa`` (take its ``net_swa.`` weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from models.passt import get_model, load_weights


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


def get_ensemble_model(arch_list: Sequence, trust_checkpoint: bool = False, **kwargs) -> PaSSTEnsemble:
    """Build an ensemble from ``(arch, fstride, tstride)`` triples or dicts of ``get_model`` arguments.

    A dict may also hold ``checkpoint``: a local file loaded with :func:`models.passt.load_weights`
    (then ``pretrained`` defaults to False; ``trust_checkpoint=True`` lets those files run code,
    see :func:`models.checkpoints.read_checkpoint`), and ``swa``. ``kwargs`` are shared by every
    member (e.g. ``n_classes``, ``input_tdim``).
    """
    members = []
    for entry in arch_list:
        if isinstance(entry, dict):
            spec = {**kwargs, **entry}
        else:
            arch, fstride, tstride = entry
            spec = {**kwargs, "arch": arch, "fstride": fstride, "tstride": tstride}
        checkpoint, swa = spec.pop("checkpoint", None), spec.pop("swa", False)
        if checkpoint and not (isinstance(entry, dict) and "pretrained" in entry):
            spec["pretrained"] = False  # the member's own weights replace any shared pretrained=True
        model = get_model(**spec)
        if checkpoint:
            load_weights(model, checkpoint, swa=swa, trust_checkpoint=trust_checkpoint)
        members.append(model)
    return PaSSTEnsemble(members)
