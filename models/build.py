"""Building networks: from a registry name (:func:`get_model`, :func:`get_ensemble_model`), and the
network and mel front end of a ``models`` config (:func:`build_net`, :func:`build_mel`; its keys are
described in :mod:`helpers.experiment.config`): what training builds, and what inference rebuilds
from the config a checkpoint carries.

One rule for local weights (:func:`build_network`): a ``checkpoint`` replaces the released weights,
so those are not loaded (``pretrained=False``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from models.ensemble import PaSSTEnsemble
from models.passt import PaSST, cut_blocks
from models.passt_weights import load_released_weights, load_weights
from models.preprocess import AugmentMelSTFT
from models.registry import DEFAULT_ARCH, resolve_arch

_logger = logging.getLogger(__name__)


def get_model(
    arch: str = DEFAULT_ARCH,
    pretrained: bool = True,
    n_classes: int = 527,
    in_channels: int = 1,
    fstride: int = 10,
    tstride: int = 10,
    input_fdim: int = 128,
    input_tdim: int = 998,
    u_patchout: int = 0,
    s_patchout_t: int = 0,
    s_patchout_f: int = 0,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
    cut_depth: int = 0,
    grad_checkpointing: bool = False,
) -> PaSST:
    """Build a PaSST network, optionally with the released weights of ``arch``.

    ``arch`` is any name :func:`models.registry.resolve_arch` knows (architecture, alias, short
    name). The signature and defaults are those of the original framework (its ``get_model``
    defaults to the best single released model, ``passt_s_kd_p16_128_ap486``); ``depth``, ``embed_dim`` and
    ``num_heads`` override the architecture (for tiny models in tests and demos, from scratch),
    and ``cut_depth`` drops blocks of a pretrained model (see :func:`models.passt.cut_blocks`).
    ``grad_checkpointing`` trades compute for memory in training (see
    :meth:`models.passt.PaSST.set_grad_checkpointing`).

    With ``pretrained=True`` the release file is taken from ``$TORCH_HOME/hub/checkpoints/`` when
    present (no network), else downloaded there. A different ``n_classes`` re-initialises the
    heads; different strides interpolate the positional encodings (both with a warning).
    """
    cfg = resolve_arch(arch)
    overrides = {"depth": depth, "embed_dim": embed_dim, "num_heads": num_heads}
    if pretrained and any(v is not None and v != getattr(cfg, k) for k, v in overrides.items()):
        raise ValueError(f"depth/embed_dim/num_heads overrides {overrides} do not fit the pretrained "
                         f"weights of {cfg.name}; use pretrained=False, or cut_depth to drop blocks")
    if pretrained and (fstride, tstride) != (cfg.fstride, cfg.tstride):
        warnings.warn(f"{cfg.name} was trained with strides {(cfg.fstride, cfg.tstride)}, "
                      f"now (fstride, tstride)=({fstride}, {tstride}): its positional encodings "
                      f"will be interpolated.", stacklevel=2)
    model = PaSST(
        u_patchout=u_patchout, s_patchout_t=s_patchout_t, s_patchout_f=s_patchout_f,
        img_size=(input_fdim, input_tdim), stride=(fstride, tstride), in_chans=in_channels,
        num_classes=n_classes, embed_dim=embed_dim or cfg.embed_dim, depth=depth or cfg.depth,
        num_heads=num_heads or cfg.num_heads,
    )
    model.arch = cfg.name
    model.set_grad_checkpointing(grad_checkpointing)
    if pretrained:
        load_released_weights(model, cfg)
    return cut_blocks(model, cut_depth)


def build_network(checkpoint: str | os.PathLike | None = None, swa: bool = False, trust_checkpoint: bool = False,
                  **net_args: Any) -> PaSST:
    """:func:`get_model` with ``net_args``; with a local ``checkpoint`` its weights instead of the released ones.

    ``swa=True`` takes the checkpoint's ``net_swa.`` weights; a file holding more than tensors and
    plain data is refused unless ``trust_checkpoint=True`` (:func:`models.checkpoints.read_checkpoint`).
    """
    if checkpoint:
        net_args["pretrained"] = False  # the local file replaces the released weights: no download first
    net = get_model(**net_args)
    if checkpoint:
        _logger.info("Loading weights from %s%s", checkpoint, " (SWA)" if swa else "")
        load_weights(net, checkpoint, swa=swa, trust_checkpoint=trust_checkpoint)
    return net


def get_ensemble_model(arch_list: Sequence, trust_checkpoint: bool = False, **kwargs) -> PaSSTEnsemble:
    """An ensemble from ``(arch, fstride, tstride)`` triples or dicts of :func:`build_network` arguments.

    A dict may hold ``checkpoint`` (a local file) and ``swa`` besides :func:`get_model`'s arguments.
    ``kwargs`` are shared by every member (e.g. ``n_classes``, ``input_tdim``, ``pretrained``).
    """
    members = []
    for entry in arch_list:
        if isinstance(entry, dict):
            member = {**kwargs, **entry}
        else:
            arch, fstride, tstride = entry
            member = {**kwargs, "arch": arch, "fstride": fstride, "tstride": tstride}
        members.append(build_network(trust_checkpoint=trust_checkpoint, **member))
    return PaSSTEnsemble(members)


def build_net(models_cfg: dict[str, Any]) -> nn.Module:
    """The network (or ensemble) described by the ``models`` config.

    Local weights (``models.checkpoint``, members' ``checkpoint``) are loaded without running
    code from them unless ``models.trust_checkpoint`` is True.
    """
    net_cfg = dict(models_cfg["net"])
    ensemble = list(models_cfg.get("ensemble") or [])
    trust = bool(models_cfg.get("trust_checkpoint"))
    if ensemble:
        shared = {k: v for k, v in net_cfg.items() if k not in ("arch", "fstride", "tstride")}
        _logger.info("Building an ensemble of %d networks", len(ensemble))
        return get_ensemble_model(ensemble, trust_checkpoint=trust, **shared)
    return build_network(models_cfg.get("checkpoint"), swa=bool(models_cfg.get("checkpoint_swa")),
                         trust_checkpoint=trust, **net_cfg)


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
