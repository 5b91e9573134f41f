"""The network and front end of training, in eval mode, with what inference needs to know about them.

:class:`InferenceModel` maps waveforms to ``(logits, embedding)`` and knows its window geometry
(the longest input its time encodings take, the shortest one a patch needs), its device and its
precision. The loaders build one from a released architecture (:func:`load_released`), an
ensemble of released architectures (:func:`load_ensemble`), any model name of the registry
(:func:`load_named`), a checkpoint written by this framework's training (:func:`load_checkpoint`),
or either of the last two (:func:`load_model`, what the commands take).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from models.build import architecture_only, build_mel, build_net
from models.checkpoints import CheckpointError, extract_state_dict, read_checkpoint
from models.ensemble import PaSSTEnsemble
from models.passt import PATCH_SIZE, PaSST
from models.passt_weights import load_state_dict_into
from models.precision import autocast_dtype, decide_precision
from models.preprocess import AugmentMelSTFT
from models.registry import ArchConfig, resolve_arch, resolve_model

_logger = logging.getLogger(__name__)

def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: the GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def networks(net: nn.Module) -> list[PaSST]:
    """The PaSST networks inside ``net`` (the members of an ensemble, or ``net`` itself)."""
    return list(net.models) if isinstance(net, PaSSTEnsemble) else [net]


class InferenceModel(nn.Module):
    """Waveforms ``[batch, samples]`` at ``sample_rate`` to ``(logits, embedding)``, in eval mode.

    Attributes:
        class_names: the name of each output, or None when unknown.
        label_set: the :data:`models.registry.LABEL_SETS` entry naming the outputs of a released
            model (fetched on demand: :func:`models.labels.class_names`), or None.
        sample_rate: what the front end expects (32 kHz for every released model).
        max_samples: the longest input the time encodings take without cutting it.
        window: the default analysis window: ``max_samples`` rounded down to whole seconds (the
            clip length the released models were trained on: 10, 20 or 30 s).
        min_samples: the shortest input one patch needs (16 frames); shorter inputs are
            zero-padded to it.
        autocast_dtype: the mixed precision of :meth:`forward` (None: fp32).
        models_config: the ``models`` config that rebuilds this network and front end without
            weights (:func:`architecture_only`), or None when unknown; a safetensors export stores
            it with the weights, so the file alone rebuilds the model.
        activation: what turns its logits into scores: ``sigmoid`` (multi-label, AudioSet's) or
            ``softmax`` (one class per clip); a checkpoint says which its task used.
    """

    def __init__(self, net: nn.Module, mel: AugmentMelSTFT, class_names: Sequence[str] | None = None,
                 name: str = "", label_set: str | None = None, models_config: Mapping | None = None,
                 activation: str = "sigmoid") -> None:
        super().__init__()
        self.net = net.eval()
        self.mel = mel.eval()
        self.name = name
        members = networks(net)
        self.n_classes = members[0].num_classes
        self.embedding_size = sum(m.embed_dim for m in members)
        if class_names is not None and len(class_names) != self.n_classes:
            raise ValueError(f"{len(class_names)} class names for a network with {self.n_classes} outputs")
        self.class_names = list(class_names) if class_names is not None else None
        self.label_set = label_set
        self.models_config = architecture_only(models_config) if models_config is not None else None
        self.activation = activation
        self.sample_rate = mel.sr
        # a spectrogram of F frames comes from at most F * hop samples; one more time column of
        # patches needs `stride` more frames than the last full patch
        frames = min(m.max_frames + m.stride[1] - 1 for m in members)
        self.max_samples = frames * mel.hopsize
        self.window = self.max_samples - self.max_samples % self.sample_rate or self.max_samples
        self.min_samples = (PATCH_SIZE - 1) * mel.hopsize + 1
        self.autocast_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def place(self, device: str | torch.device | None = None, precision: str = "auto") -> InferenceModel:
        """Move to ``device`` (None/"auto": the GPU when there is one) and set the precision: ``auto`` (the
        fastest the hardware runs natively), ``fp32``, ``bf16``, ``fp16`` (:func:`models.precision.decide_precision`)."""
        device = resolve_device(device)
        self.autocast_dtype = autocast_dtype(decide_precision(device, precision, "infer"))
        return self.to(device)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, embedding)`` in fp32 for waveforms ``[batch, samples]`` (moved to the model's device)."""
        wave = wave.to(self.device, torch.float32)
        if wave.shape[-1] < self.min_samples:
            wave = nn.functional.pad(wave, (0, self.min_samples - wave.shape[-1]))
        spectrograms = self.mel(wave).unsqueeze(1)
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits, embedding = self.net(spectrograms)
        return logits.float(), embedding.float()

    def describe(self, window: int | None = None, activation: str | None = None) -> str:
        """One line: name, classes, the analysis window (``window`` samples, default the model's), the
        scores' activation, device and precision."""
        precision = str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "float32"
        return (f"{self.name or type(self.net).__name__}: {self.n_classes} classes ({activation or self.activation}), "
                f"{(window or self.window) / self.sample_rate:g} s windows, {self.device}, {precision}")


# ------------------------------------------------------------------------------------- loaders
def _released_net_args(cfg: ArchConfig, pretrained: bool, n_classes: int | None = None) -> dict:
    """:func:`models.build.get_model` arguments of a released architecture, as it was trained."""
    return {"arch": cfg.name, "pretrained": pretrained, "n_classes": n_classes or cfg.n_classes,
            "fstride": cfg.fstride, "tstride": cfg.tstride, "input_fdim": cfg.input_fdim, "input_tdim": cfg.input_tdim}


def _build(models_cfg: dict, class_names: Sequence[str] | None, name: str, label_set: str | None,
           activation: str = "sigmoid") -> InferenceModel:
    return InferenceModel(build_net(models_cfg), build_mel(models_cfg["mel"]), class_names, name,
                          label_set=label_set, models_config=models_cfg, activation=activation)


def load_released(arch: str, class_names: Sequence[str] | None = None) -> InferenceModel:
    """A released architecture (or alias, or short name) with its weights and the settings it was trained with."""
    cfg = resolve_arch(arch)
    models_cfg = {"net": _released_net_args(cfg, pretrained=True),
                  "mel": {"n_mels": cfg.input_fdim, "hopsize": cfg.hopsize}, "ensemble": []}
    return _build(models_cfg, class_names, cfg.name, cfg.labels)


def load_ensemble(archs: Sequence[str], class_names: Sequence[str] | None = None,
                  name: str = "") -> InferenceModel:
    """The mean of the logits of several released architectures (each with its own strides)."""
    cfgs = [resolve_arch(a) for a in archs]
    hops = {c.hopsize for c in cfgs}
    if len(hops) > 1:
        raise ValueError(f"an ensemble shares one mel front end, but {archs} use STFT hops {sorted(hops)}")
    models_cfg = {"net": {"pretrained": True}, "mel": {"hopsize": hops.pop()},
                  "ensemble": [_released_net_args(c, pretrained=True) for c in cfgs]}
    label_sets = {c.labels for c in cfgs}
    return _build(models_cfg, class_names, name or "+".join(archs), label_sets.pop() if len(label_sets) == 1 else None)


def load_named(name: str) -> InferenceModel:
    """Any model name of the registry (:func:`models.registry.resolve_model`): an architecture, an
    alias, a short name or an ensemble named config."""
    choice = resolve_model(name)
    if choice.is_ensemble:
        return load_ensemble([arch.name for arch in choice.members], name=choice.name)
    return load_released(choice.name)


#: the endings of checkpoint files (a name ending so is not looked up in the registry)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def load_model(name_or_path: str | os.PathLike, swa: bool = False, arch: str | None = None,
               trust_checkpoint: bool = False) -> InferenceModel:
    """A checkpoint file (:func:`load_checkpoint`) or a model name of the registry (:func:`load_named`)."""
    if os.path.isfile(name_or_path):
        return load_checkpoint(name_or_path, swa=swa, arch=arch, trust_checkpoint=trust_checkpoint)
    name = os.fspath(name_or_path)
    if name.endswith(CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"checkpoint file not found: {name}")
    try:
        return load_named(name)
    except ValueError as err:
        raise ValueError(f"{err}; or a checkpoint file") from None


def _load_network_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` (from :func:`extract_state_dict`) into a PaSST or each member of an ensemble."""
    if isinstance(net, PaSSTEnsemble):
        for i, member in enumerate(net.models):
            prefix = f"models.{i}."
            load_state_dict_into(member, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                 source=f"{source} (ensemble member {i})")
    else:
        load_state_dict_into(net, state, source=source)


def load_checkpoint(path: str | os.PathLike, swa: bool = False, arch: str | None = None,
                    class_names: Sequence[str] | None = None, trust_checkpoint: bool = False) -> InferenceModel:
    """A checkpoint of this framework's training (``.ckpt``, or ``.safetensors`` with its record):
    its ``models`` config rebuilds the network and front end, its class names name the outputs, its
    task's activation (softmax for one class per clip) scores them; ``swa=True`` takes the SWA weights.

    Checkpoints without that record (the original framework's ``.ckpt``, plain state dicts) need
    ``arch``: the released architecture they were trained from (strides and STFT hop follow it,
    the class count follows the checkpoint's head). A file holding more than tensors and plain
    data is refused unless ``trust_checkpoint=True`` (:func:`models.checkpoints.read_checkpoint`).
    """
    source = os.fspath(path)
    label_set = None
    activation = "sigmoid"  # what checkpoints that do not record their task (the original's) were mostly trained for
    checkpoint = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    state = extract_state_dict(checkpoint, swa=swa)
    record = checkpoint.get("passt") if isinstance(checkpoint, Mapping) else None
    if record and record.get("models"):
        models_cfg = architecture_only(record["models"])
        models_cfg["mel"] = models_cfg.get("mel") or {}
        name = f"{source}{' (SWA)' if swa else ''}"
        if class_names is None:
            class_names = record.get("class_names")
        activation = record.get("activation") or activation
    elif arch is not None:
        cfg = resolve_arch(arch)
        head = state.get("head.1.weight")
        n_classes = head.shape[0] if head is not None else cfg.n_classes
        models_cfg = {"net": _released_net_args(cfg, pretrained=False, n_classes=n_classes),
                      "mel": {"n_mels": cfg.input_fdim, "hopsize": cfg.hopsize}, "ensemble": []}
        name = f"{source} ({cfg.name})"
        if n_classes == cfg.n_classes:
            label_set = cfg.labels
    else:
        raise CheckpointError(
            f"{source} does not say which network it holds (no 'passt' record: it was not written by this "
            f"framework's training). Name the released architecture it was trained from: --arch ARCH "
            f"(python: load_checkpoint(path, arch=...)).")
    model = _build(models_cfg, class_names, name, label_set, activation)
    _load_network_state(model.net, state, source)
    return model
