"""Networks and mel front ends from the ``models`` config.

``models.net``      every argument of :func:`models.passt.get_model`
``models.mel``      every argument of :class:`models.preprocess.AugmentMelSTFT`
``models.ensemble`` non-empty: evaluate/train the mean of several networks; each entry is
                    ``[arch, fstride, tstride]`` (released weights) or a dict of ``get_model``
                    arguments plus ``checkpoint`` (a local file) and ``swa`` (take its ``net_swa.``
                    weights); ``models.net`` gives the values shared by every member
``models.checkpoint``     local weights for ``models.net`` (state dict or Lightning ``.ckpt``)
``models.checkpoint_swa`` take the ``net_swa.`` weights of that Lightning checkpoint
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from models.checkpoints import load_weights
from models.passt import get_ensemble_model, get_model
from models.preprocess import AugmentMelSTFT

_logger = logging.getLogger(__name__)

#: per-member keys of ``models.ensemble`` dicts that are not ``get_model`` arguments
MEMBER_EXTRA_KEYS = ("checkpoint", "swa")


def signature_defaults(func: Callable) -> dict[str, Any]:
    """``{argument: default}`` of ``func`` (a class gives its ``__init__``), for config defaults."""
    params = inspect.signature(func).parameters
    return {name: p.default for name, p in params.items()
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


def _check_keys(given: dict, func: Callable, config_path: str, extra: tuple[str, ...] = ()) -> None:
    allowed = set(signature_defaults(func)) | set(extra)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{config_path}: unknown key(s) {unknown}; valid keys are {sorted(allowed)}")


def _ensemble_member(entry: Any, index: int) -> tuple | dict:
    """One ``models.ensemble`` entry as ``get_ensemble_model`` takes it (checked)."""
    if isinstance(entry, dict):
        _check_keys(entry, get_model, f"models.ensemble[{index}]", MEMBER_EXTRA_KEYS)
        member = dict(entry)
        if member.get("checkpoint"):
            # weights come from the local file: do not download the released ones first
            member.setdefault("pretrained", False)
        return member
    if isinstance(entry, (list, tuple)) and len(entry) == 3:
        return tuple(entry)
    raise ValueError(f"models.ensemble[{index}] = {entry!r}: use [arch, fstride, tstride] or a dict like "
                     f"{{'arch': ..., 'fstride': 10, 'tstride': 10, 'checkpoint': 'path.ckpt'}}")


def check_models_config(models_cfg: dict[str, Any]) -> None:
    """Raise a clear error for unknown keys in ``models.net``, ``models.mel`` and ``models.ensemble``."""
    _check_keys(models_cfg["net"], get_model, "models.net")
    _check_keys(models_cfg["mel"], AugmentMelSTFT, "models.mel")
    for i, entry in enumerate(models_cfg.get("ensemble") or []):
        _ensemble_member(entry, i)


def build_net(models_cfg: dict[str, Any]) -> nn.Module:
    """The network (or ensemble) described by the ``models`` config."""
    net_cfg = dict(models_cfg["net"])
    _check_keys(net_cfg, get_model, "models.net")
    ensemble = list(models_cfg.get("ensemble") or [])
    if ensemble:
        members = [_ensemble_member(entry, i) for i, entry in enumerate(ensemble)]
        shared = {k: v for k, v in net_cfg.items() if k not in ("arch", "fstride", "tstride")}
        _logger.info("Building an ensemble of %d networks", len(members))
        return get_ensemble_model(members, **shared)
    checkpoint = models_cfg.get("checkpoint")
    if checkpoint:
        net_cfg["pretrained"] = False  # the local checkpoint replaces the released weights
    net = get_model(**net_cfg)
    if checkpoint:
        _logger.info("Loading weights from %s%s", checkpoint, " (SWA)" if models_cfg.get("checkpoint_swa") else "")
        load_weights(net, checkpoint, swa=bool(models_cfg.get("checkpoint_swa")))
    return net


def build_mel(mel_cfg: dict[str, Any]) -> nn.Module:
    """The mel front end of the ``models.mel`` config."""
    _check_keys(mel_cfg, AugmentMelSTFT, "models.mel")
    return AugmentMelSTFT(**mel_cfg)


def net_output_classes(models_cfg: dict[str, Any]) -> int:
    """How many outputs the configured network has (``models.net.n_classes`` unless a member overrides it)."""
    n = int(models_cfg["net"].get("n_classes", 527))
    for entry in models_cfg.get("ensemble") or []:
        if isinstance(entry, dict) and "n_classes" in entry:
            n = int(entry["n_classes"])
    return n
