"""The network and mel front end of a ``models`` config (its keys are described in
:mod:`helpers.experiment.config`): what training builds, and what inference rebuilds from the
config a checkpoint carries."""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from models.ensemble import get_ensemble_model
from models.passt import get_model, load_weights
from models.preprocess import AugmentMelSTFT

_logger = logging.getLogger(__name__)


def _ensemble_member(entry: Any) -> tuple | dict:
    """One ``models.ensemble`` entry (checked by the config checker) as ``get_ensemble_model`` takes it."""
    if isinstance(entry, dict):
        member = dict(entry)
        if member.get("checkpoint"):
            # weights come from the local file: do not download the released ones first
            member.setdefault("pretrained", False)
        return member
    return tuple(entry)


def build_net(models_cfg: dict[str, Any]) -> nn.Module:
    """The network (or ensemble) described by the ``models`` config.

    Local weights (``models.checkpoint``, members' ``checkpoint``) are loaded without running
    code from them unless ``models.trust_checkpoint`` is True.
    """
    net_cfg = dict(models_cfg["net"])
    ensemble = list(models_cfg.get("ensemble") or [])
    trust = bool(models_cfg.get("trust_checkpoint"))
    if ensemble:
        members = [_ensemble_member(entry) for entry in ensemble]
        shared = {k: v for k, v in net_cfg.items() if k not in ("arch", "fstride", "tstride")}
        _logger.info("Building an ensemble of %d networks", len(members))
        return get_ensemble_model(members, trust_checkpoint=trust, **shared)
    checkpoint = models_cfg.get("checkpoint")
    if checkpoint:
        net_cfg["pretrained"] = False  # the local checkpoint replaces the released weights
    net = get_model(**net_cfg)
    if checkpoint:
        _logger.info("Loading weights from %s%s", checkpoint, " (SWA)" if models_cfg.get("checkpoint_swa") else "")
        load_weights(net, checkpoint, swa=bool(models_cfg.get("checkpoint_swa")), trust_checkpoint=trust)
    return net


def build_mel(mel_cfg: dict[str, Any]) -> nn.Module:
    """The mel front end of the ``models.mel`` config."""
    return AugmentMelSTFT(**mel_cfg)


def net_output_classes(models_cfg: dict[str, Any]) -> int:
    """How many outputs the configured network has (``models.net.n_classes`` unless a member overrides it)."""
    n = int(models_cfg["net"].get("n_classes", 527))
    for entry in models_cfg.get("ensemble") or []:
        if isinstance(entry, dict) and "n_classes" in entry:
            n = int(entry["n_classes"])
    return n
