"""Loading weights into :class:`models.passt.PaSST` from whatever a user has.

Accepted inputs:

* plain state dicts of the network (the released ``.pt`` files);
* the original framework's Lightning ``.ckpt`` files: keys under ``net.`` and, with SWA,
  ``net_swa.`` (``swa=True`` picks the averaged weights); a ``_orig_mod.`` prefix left by
  ``torch.compile`` is removed too;
* ImageNet checkpoints (a ``model`` key and a square ``pos_embed``), adapted to the
  frequency/time encodings of PaSST.

Mismatches are adapted instead of failing: another number of classes re-initialises the heads,
other strides interpolate the positional encodings, another input channel count adapts the
patch-embedding conv; each with one warning.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from models.passt import ArchConfig, PaSST, patch_grid

_logger = logging.getLogger(__name__)

HEAD_KEYS = ("head.1.weight", "head.1.bias", "head_dist.weight", "head_dist.bias")
_IMAGENET_HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint)."""


def release_path(cfg: ArchConfig) -> Path:
    """Where the release file of ``cfg`` is cached: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / cfg.file_name


def fetch_release(cfg: ArchConfig) -> Path:
    """Return the local path of ``cfg``'s release file, downloading it only when missing."""
    path = release_path(cfg)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _logger.info("Downloading %s to %s", cfg.url, path)
    try:
        # downloads to a temporary file and renames it: an interrupted download leaves no partial file
        torch.hub.download_url_to_file(cfg.url, str(path), progress=True)
    except Exception as err:  # noqa: BLE001 - any network failure gets the same actionable message
        raise RuntimeError(
            f"Could not download the weights of {cfg.name} from {cfg.url} ({err}). Without network "
            f"access, download that file elsewhere and put it at {path}.") from err
    return path


def read_checkpoint(path: str | os.PathLike, url: str | None = None) -> Mapping:
    """Load a checkpoint file on the CPU with a clear error when it is corrupt or truncated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    refetch = (f"Delete it and run again to download it again from {url}" if url
               else "Fetch or copy the file again")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Lightning checkpoints of the original framework pickle extra objects (e.g. its config);
            # they are the user's own files, so a full unpickle is acceptable here.
            _logger.info("%s holds more than tensors; loading it with weights_only=False", path)
            return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({err}). {refetch}.") from err


def extract_state_dict(checkpoint: Mapping, swa: bool = False) -> dict[str, torch.Tensor]:
    """The network's own state dict from any supported checkpoint layout."""
    state = checkpoint
    for key in ("state_dict", "model"):  # Lightning, ImageNet (DeiT)
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    prefixes = ("net_swa.",) if swa else ("net.",)
    if any(k.startswith(prefixes) for k in state):
        state = {k[len(prefixes[0]):]: v for k, v in state.items() if k.startswith(prefixes[0])}
    elif swa:
        raise KeyError("swa=True but the checkpoint has no 'net_swa.' weights (was it trained with SWA?)")
    return {k.replace("_orig_mod.", ""): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a patch-embedding conv weight ``[E, C, k, k]`` to ``in_chans`` input channels."""
    channels = weight.shape[1]
    if channels == in_chans:
        return weight
    if in_chans == 1:
        return weight.float().sum(dim=1, keepdim=True).to(weight.dtype)
    repeat = math.ceil(in_chans / channels)
    return (weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (channels / in_chans)).to(weight.dtype)


def image_pos_embed_to_passt(pos_embed: torch.Tensor, num_tokens: int,
                             grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Turn an image model's square ``pos_embed`` into PaSST's token/frequency/time encodings.

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


def adapt_state_dict(state: dict[str, torch.Tensor], model: PaSST,
                     trained_stride: tuple[int, int] | None = None, source: str = "checkpoint") -> dict:
    """Make ``state`` fit ``model``: image encodings, conv channels, heads and encoding grids.

    ``trained_stride`` tells how the checkpoint was trained. When the model uses other strides the
    encodings are interpolated to the new grid. When only the time length differs (same stride, a
    model built for other clip lengths) the model adopts the checkpoint's time encodings, so it
    behaves exactly like the released network; shorter inputs use a slice of them.
    """
    state = dict(state)
    model_state = model.state_dict()
    notes = []

    from_image = "time_new_pos_embed" not in state and "pos_embed" in state
    if from_image:
        grid = patch_grid(*model.img_size, *model.stride)
        state.update(image_pos_embed_to_passt(state.pop("pos_embed"), model.num_tokens, grid))
        for key in _IMAGENET_HEAD_KEYS:  # ImageNet classifiers: 1000 classes, other layout
            state.pop(key, None)
        _logger.info("Adapted ImageNet positional encodings to the %s patch grid", grid)

    conv = state.get("patch_embed.proj.weight")
    if conv is not None and conv.dim() == 4 and conv.shape[1] != model.in_chans:
        state["patch_embed.proj.weight"] = adapt_input_conv(conv, model.in_chans)
        if not from_image:  # image weights always need this: not worth a warning
            notes.append(f"patch embedding adapted from {conv.shape[1]} to {model.in_chans} input channels")

    head_mismatch = [k for k in HEAD_KEYS if k in state and k in model_state
                     and state[k].shape != model_state[k].shape]
    if head_mismatch:
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
            model.time_new_pos_embed = torch.nn.Parameter(
                torch.zeros_like(time, device=model.time_new_pos_embed.device))
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
    """Adapt ``state`` to ``model`` (see :func:`adapt_state_dict`) and load it.

    Only the heads may be missing afterwards (re-initialised, or absent from image checkpoints);
    anything else missing or unexpected is an error that names the keys.
    """
    state = adapt_state_dict(state, model, trained_stride, source)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "head_dist."))]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this PaSST configuration (depth {len(model.blocks)}, embed_dim "
            f"{model.embed_dim}). Missing keys: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected keys: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")


def load_pretrained(model: PaSST, cfg: ArchConfig) -> PaSST:
    """Load the released weights of ``cfg`` (downloaded once into torch.hub's cache)."""
    path = fetch_release(cfg)
    state = extract_state_dict(read_checkpoint(path, url=cfg.url))
    load_state_dict_into(model, state, trained_stride=(cfg.fstride, cfg.tstride), source=str(path))
    return model


def load_weights(model: PaSST, path: str | os.PathLike, swa: bool = False,
                 trained_stride: tuple[int, int] | None = None) -> PaSST:
    """Load a local checkpoint (state dict, Lightning ``.ckpt`` or ImageNet file) into ``model``.

    ``swa=True`` takes the ``net_swa.`` weights of a Lightning checkpoint. ``trained_stride``
    (fstride, tstride) of the checkpoint, when known, lets other strides interpolate the encodings.
    """
    state = extract_state_dict(read_checkpoint(path), swa=swa)
    load_state_dict_into(model, state, trained_stride=trained_stride, source=str(path))
    return model
