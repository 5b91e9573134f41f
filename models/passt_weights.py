"""PaSST's own checkpoint adaptation: what makes any PaSST or ImageNet checkpoint fit a PaSST network.

* :func:`checkpoint_filter_fn` - ImageNet encodings, input channels, heads for other class counts,
  encodings for other strides or clip lengths (as timm's model files filter checkpoints);
* :func:`load_state_dict_into` - filter and load, only the heads may be missing;
* :func:`load_weights` - a local file (anything :func:`models.checkpoints.read_checkpoint` reads);
* :func:`load_released_weights` - the release file of a registry architecture, from the torch hub cache.

The network itself is :mod:`models.passt`; reading files knows no architecture (:mod:`models.checkpoints`).
"""

from __future__ import annotations

import logging
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import adapt_input_conv

from models.checkpoints import extract_state_dict, load_checked, read_checkpoint
from models.hub_cache import cached_download
from models.passt import PaSST, patch_grid
from models.registry import ArchConfig

_logger = logging.getLogger(__name__)

HEAD_KEYS = ("head.1.weight", "head.1.bias", "head_dist.weight", "head_dist.bias")
_IMAGENET_HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


def _image_pos_embed_to_passt(pos_embed: torch.Tensor, num_tokens: int,
                              grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """An image model's square ``pos_embed`` as PaSST's token/frequency/time encodings.

    The image grid is resized (bicubic) to the patch grid, then averaged over time for the
    frequency encodings and over frequency for the time encodings.
    """
    tokens, image_grid = pos_embed[:, :num_tokens], pos_embed[0, num_tokens:]
    side = int(math.isqrt(image_grid.shape[0]))
    image_grid = image_grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(image_grid, size=grid, mode="bicubic", align_corners=False)
    return {
        "new_pos_embed": tokens,
        "freq_new_pos_embed": resized.mean(dim=3, keepdim=True),
        "time_new_pos_embed": resized.mean(dim=2, keepdim=True),
    }


def _resize_encoding(enc: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Interpolate a ``[1, E, F, 1]`` (axis 2) or ``[1, E, 1, T]`` (axis 3) encoding to ``size``."""
    target = (size, 1) if axis == 2 else (1, size)
    return F.interpolate(enc.float(), size=target, mode="bicubic", align_corners=False).to(enc.dtype)


def checkpoint_filter_fn(state: dict[str, torch.Tensor], model: PaSST,
                         trained_stride: tuple[int, int] | None = None, source: str = "checkpoint") -> dict:
    """Make ``state`` fit ``model``: image encodings, conv channels, heads and encoding grids.

    ``trained_stride`` tells how the checkpoint was trained. When the model uses other strides the
    encodings are interpolated to the new grid. When only the time length differs (same stride, a
    model built for other clip lengths) the model adopts the checkpoint's time encodings, so it
    behaves exactly like the released network; shorter inputs use a slice of them.
    Each adaptation is announced in one warning.
    """
    state = dict(state)
    model_state = model.state_dict()
    notes = []

    from_image = "time_new_pos_embed" not in state and "pos_embed" in state
    if from_image:
        grid = patch_grid(*model.img_size, *model.stride)
        state.update(_image_pos_embed_to_passt(state.pop("pos_embed"), model.num_tokens, grid))
        for key in _IMAGENET_HEAD_KEYS:  # ImageNet classifiers: 1000 classes, other layout
            state.pop(key, None)
        _logger.info("Adapted ImageNet positional encodings to the %s patch grid", grid)

    conv = state.get("patch_embed.proj.weight")
    if conv is not None and conv.dim() == 4 and conv.shape[1] != model.in_chans:
        state["patch_embed.proj.weight"] = adapt_input_conv(model.in_chans, conv, base_chans=conv.shape[1])
        if not from_image:  # image weights always need this: not worth a warning
            notes.append(f"patch embedding adapted from {conv.shape[1]} to {model.in_chans} input channels")

    head_mismatch = [k for k in HEAD_KEYS if k in state and k in model_state
                     and state[k].shape != model_state[k].shape]
    # only another class count re-initialises the heads; another width is another network (load_checked says so)
    same_width = all(state[k].shape[1:] == model_state[k].shape[1:] for k in head_mismatch)
    if head_mismatch and same_width:
        trained_classes = state[head_mismatch[0]].shape[0]
        for key in HEAD_KEYS:
            state.pop(key, None)
        notes.append(f"the heads were re-initialised for {model.num_classes} classes "
                     f"(the checkpoint has {trained_classes})")

    freq, time = state.get("freq_new_pos_embed"), state.get("time_new_pos_embed")
    want_f, want_t = model.freq_new_pos_embed.shape[2], model.time_new_pos_embed.shape[3]
    # Without a known training stride, a different frequency grid (the mel count is fixed) tells.
    stride_changed = (tuple(trained_stride) != tuple(model.stride) if trained_stride is not None
                      else freq is not None and freq.shape[2] != want_f)
    if freq is not None and freq.shape[2] != want_f:
        state["freq_new_pos_embed"] = _resize_encoding(freq, want_f, axis=2)
        notes.append(f"frequency encodings interpolated from {freq.shape[2]} to {want_f} rows")
    if time is not None and time.shape[3] != want_t:
        if stride_changed:  # the same clips on another grid: stretch the encodings onto it
            state["time_new_pos_embed"] = _resize_encoding(time, want_t, axis=3)
            notes.append(f"time encodings interpolated from {time.shape[3]} to {want_t} columns")
        else:  # a model built for another clip length: keep the released encodings as they are
            model.time_new_pos_embed = nn.Parameter(torch.zeros_like(time, device=model.time_new_pos_embed.device))
            _logger.info("Model adopts the %d time encodings of the %s (it was built for %d)",
                         time.shape[3], source, want_t)
            if time.shape[3] < want_t:
                notes.append(f"the {source} only has time encodings for {time.shape[3]} patches; "
                             f"longer inputs will be cut")

    if notes:
        warnings.warn(f"Loading {source} into a different configuration: " + "; ".join(notes) + ".",
                      stacklevel=3)
    return state


def load_state_dict_into(model: PaSST, state: dict[str, torch.Tensor],
                         trained_stride: tuple[int, int] | None = None, source: str = "checkpoint") -> None:
    """Filter ``state`` for ``model`` and load it; only the heads may be missing afterwards."""
    load_checked(model, checkpoint_filter_fn(state, model, trained_stride, source), source,
                 may_be_missing=("head.", "head_dist."))


def load_weights(model: PaSST, path: str | os.PathLike, swa: bool = False,
                 trained_stride: tuple[int, int] | None = None, trust_checkpoint: bool = False) -> PaSST:
    """Load a local checkpoint (state dict, Lightning ``.ckpt``, ImageNet file or ``.safetensors``) into ``model``.

    ``swa=True`` takes the ``net_swa.`` weights of a Lightning checkpoint. ``trained_stride``
    (fstride, tstride) of the checkpoint, when known, lets other strides interpolate the encodings.
    A file holding more than tensors and plain data is refused unless ``trust_checkpoint=True``
    (see :func:`models.checkpoints.read_checkpoint`).
    """
    checkpoint = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    load_state_dict_into(model, extract_state_dict(checkpoint, swa=swa), trained_stride, str(path))
    return model


def load_released_weights(model: PaSST, arch: ArchConfig) -> PaSST:
    """The released weights of ``arch`` into ``model``, from ``$TORCH_HOME/hub/checkpoints/`` when
    present (no network), else downloaded there first."""
    path = cached_download(arch.url, f"the weights of {arch.name}",
                           offline_hint="; or build the network without them, from random weights: pretrained=False "
                                        "(experiments: models.net.pretrained=False)")
    load_state_dict_into(model, extract_state_dict(read_checkpoint(path, url=arch.url)), (arch.fstride, arch.tstride),
                         str(path))
    return model
