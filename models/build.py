"""Building networks: from a registry name (:func:`get_model`, :func:`get_ensemble_model`), and the
network and mel front end of a ``models`` config (:func:`build_net`, :func:`build_mel`; its keys are
described in :mod:`helpers.experiment.config`): what training builds, and what inference rebuilds
from the config a checkpoint carries.

One rule for local weights (:func:`build_network`): a ``checkpoint`` replaces the released weights,
so those are not loaded (``pretrained=False``).

A checkpoint written by this framework's training carries its ``models`` config (under
``"passt"``). Which of those keys define the network its weights fit (:data:`NET_ARCHITECTURE_KEYS`,
:data:`MEL_FEATURE_KEYS`) and which only say how it was trained (patchout, SpecAugment, the
mel band shifts, ``pretrained``) is decided here, once (:func:`adopt_checkpoint_networks`).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

from models.checkpoints import CheckpointError, read_checkpoint
from models.ensemble import PaSSTEnsemble
from models.passt import PaSST, cut_blocks
from models.passt_weights import load_released_weights, load_weights
from models.preprocess import AugmentMelSTFT
from models.registry import DEFAULT_ARCH, resolve_arch

_logger = logging.getLogger(__name__)

#: ``models.net`` keys that shape the weights: a checkpoint's weights fit only the network they name
NET_ARCHITECTURE_KEYS = ("arch", "in_channels", "fstride", "tstride", "input_fdim", "input_tdim", "depth",
                         "embed_dim", "num_heads", "cut_depth")
#: ``models.mel`` keys that define the features the network was trained on (not the augmentations)
MEL_FEATURE_KEYS = ("sr", "win_length", "hopsize", "n_fft", "n_mels", "htk", "fmin", "fmax", "norm")
#: AugmentMelSTFT's defaults of the keys that decide its upper mel edge when ``fmax`` is None
_MEL_DEFAULTS = {"sr": 32000, "fmax_aug_range": 2000}


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


# ------------------------------------------------------------------ networks a checkpoint carries
def plain_config(obj: Any) -> Any:
    """Plain dicts and lists (configs may come back from a checkpoint as sacred's read-only types)."""
    if isinstance(obj, Mapping):
        return {k: plain_config(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_config(v) for v in obj]
    return copy.deepcopy(obj)


def architecture_only(models_cfg: Mapping) -> dict:
    """A ``models`` config that builds the same network with no weights: no release download and
    no start checkpoint (the weights come from the checkpoint being loaded)."""
    cfg = plain_config(models_cfg)
    cfg["net"] = {**cfg.get("net", {}), "pretrained": False}
    cfg["checkpoint"], cfg["checkpoint_swa"], cfg["trust_checkpoint"] = None, False, False
    cfg["ensemble"] = [{**_member_dict(entry), "pretrained": False, "checkpoint": None, "swa": False}
                       for entry in cfg.get("ensemble") or []]
    return cfg


def _member_dict(entry: Any) -> dict:
    return dict(entry) if isinstance(entry, Mapping) else dict(zip(("arch", "fstride", "tstride"), entry, strict=True))


def checkpoint_record(path: str, trust_checkpoint: bool = False) -> dict | None:
    """What a checkpoint of this framework carries under ``"passt"`` (its ``models`` config, class
    names, experiment), or None: the original's checkpoints, released weights and plain state
    dicts carry no network config."""
    checkpoint = read_checkpoint(path, trust_checkpoint=trust_checkpoint, mmap=True)  # the record, not the weights
    record = checkpoint.get("passt") if isinstance(checkpoint, Mapping) else None
    if not isinstance(record, Mapping) or not isinstance(record.get("models"), Mapping):
        return None
    return plain_config(record)


def _effective_fmax(mel_cfg: Mapping) -> float:
    """The upper mel edge AugmentMelSTFT uses: ``fmax``, or when None, what it derives from sr and the shift range."""
    if mel_cfg.get("fmax") is not None:
        return mel_cfg["fmax"]
    return mel_cfg.get("sr", _MEL_DEFAULTS["sr"]) // 2 - mel_cfg.get("fmax_aug_range", _MEL_DEFAULTS["fmax_aug_range"]) // 2


def _adopt(target: dict, source: Mapping, keys: tuple[str, ...], prefix: str, taken: dict[str, tuple],
           shared: Mapping | None = None) -> None:
    """Copy ``keys`` present in ``source`` into ``target``, recording those that changed as (old, new).

    ``shared``: where ``target`` takes the keys it does not set from (an ensemble member: ``models.net``).
    """
    for key in keys:
        if key not in source:
            continue
        old, new = target.get(key, (shared or {}).get(key)), source[key]
        if key == "fmax":  # None means "derived": compare what the front ends would use
            old_value, new = _effective_fmax(target), _effective_fmax(source)
            if old_value == new:
                continue
        elif old == new:
            continue
        target[key] = new
        taken[f"{prefix}.{key}"] = (old, new)


def adopt_checkpoint_networks(models_cfg: Mapping, trust_checkpoint: bool | None = None
                              ) -> tuple[dict, dict[str, tuple], dict[str, dict]]:
    """``models_cfg`` with the network of every local checkpoint it names: ``models.checkpoint``
    and the ``checkpoint`` of ensemble members.

    A checkpoint that carries its ``models`` config (:func:`checkpoint_record`) fixes the
    keys that shape its weights (:data:`NET_ARCHITECTURE_KEYS` of ``models.net`` or of the member,
    :data:`MEL_FEATURE_KEYS` of ``models.mel``); how to train (patchout, SpecAugment, ...) and
    ``n_classes`` (the data's; a different count re-initialises the heads) stay as configured.

    Returns the config, the keys taken (``{"models.net.depth": (configured, taken)}``, only those
    that changed) and the record of each checkpoint that has one (:func:`checkpoint_record`, by path).
    """
    cfg = plain_config(models_cfg)
    trust = bool(cfg.get("trust_checkpoint")) if trust_checkpoint is None else trust_checkpoint
    taken: dict[str, tuple] = {}
    records: dict[str, dict] = {}
    mel_source: tuple[str, dict] | None = None

    def record_of(path: str, where: str) -> dict | None:
        if path not in records:
            record = checkpoint_record(path, trust)
            if record is None:
                return None
            if record["models"].get("ensemble"):
                raise CheckpointError(
                    f"{where}={path} holds an ensemble of {len(record['models']['ensemble'])} networks, not one "
                    f"network; use its members' checkpoints as models.ensemble entries")
            records[path] = record
        return records[path]["models"]

    ensemble = cfg.get("ensemble") or []
    if ensemble:
        members = []
        for i, entry in enumerate(ensemble):
            member = _member_dict(entry) if isinstance(entry, Mapping) else entry
            if isinstance(member, dict) and member.get("checkpoint"):
                record = record_of(member["checkpoint"], f"models.ensemble[{i}].checkpoint")
                if record is not None:
                    _adopt(member, record.get("net") or {}, NET_ARCHITECTURE_KEYS, f"models.ensemble[{i}]", taken,
                           shared=cfg.get("net"))
                    mel_source = _same_mel(mel_source, member["checkpoint"], record.get("mel") or {})
            members.append(member)
        cfg["ensemble"] = members
    elif cfg.get("checkpoint"):
        record = record_of(cfg["checkpoint"], "models.checkpoint")
        if record is not None:
            _adopt(cfg.setdefault("net", {}), record.get("net") or {}, NET_ARCHITECTURE_KEYS, "models.net", taken)
            mel_source = (cfg["checkpoint"], record.get("mel") or {})
    if mel_source is not None:
        _adopt(cfg.setdefault("mel", {}), mel_source[1], MEL_FEATURE_KEYS, "models.mel", taken)
    return cfg, taken, records


def _same_mel(current: tuple[str, dict] | None, path: str, mel: dict) -> tuple[str, dict]:
    """Ensemble members share one front end: their checkpoints must agree on its features."""
    if current is None:
        return path, mel
    other_path, other = current
    differ = [k for k in MEL_FEATURE_KEYS
              if (_effective_fmax(mel) != _effective_fmax(other) if k == "fmax" else mel.get(k) != other.get(k))]
    if differ:
        raise CheckpointError(f"ensemble members share one mel front end, but {other_path} and {path} were trained "
                              f"on different features ({', '.join(f'models.mel.{k}' for k in differ)})")
    return current
