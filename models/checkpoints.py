"""Reading checkpoint files, whatever network they belong to.

Generic pieces a model file combines with its own checkpoint filter (as timm's model files do):

* :func:`read_checkpoint`: a file on disk (``torch.save`` pickle or safetensors), running no code
  from it: objects other than tensors and plain data are refused unless the caller trusts the
  file; a clear error when it is corrupt or truncated;
* :func:`extract_state_dict`: the network's own state dict out of plain state dicts, Lightning
  ``.ckpt`` files (weights under ``net.``, the SWA average under ``net_swa.``) and ImageNet files
  (a ``model`` key); a ``_orig_mod.`` prefix left by ``torch.compile`` is removed;
* :func:`load_checked`: ``load_state_dict`` that names the keys when a checkpoint does not fit.

This module knows no architecture: :mod:`models.passt_weights` passes what PaSST needs. Release
files are fetched into torch.hub's cache by :mod:`models.hub_cache`.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from models.checkpoint_types import load_weights_only, unsafe_globals
from models.safetensors_file import is_safetensors, read_safetensors

_logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint) or does not fit."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds objects whose unpickling could run code; refused without an opt-in."""


class TrustedCheckpointWarning(UserWarning):
    """A checkpoint is being fully unpickled because the caller vouched for it."""


#: how each entry point opts in to a full unpickle, for the refusal message
TRUST_OPT_INS = ("--trust-checkpoint (inference.py)", "models.trust_checkpoint=True (experiments)",
                 "trust_checkpoint=True (Python: load_checkpoint, hear.load_model, load_weights, read_checkpoint)")


def read_checkpoint(path: str | os.PathLike, url: str | None = None, trust_checkpoint: bool = False,
                    mmap: bool = False) -> Mapping:
    """Load a checkpoint file on the CPU, running no code from it unless ``trust_checkpoint`` is True.

    ``.safetensors`` files (:mod:`models.safetensors_file`) hold only tensors and JSON. Pickled
    files (``torch.save``: ``.ckpt``, ``.pt``, ``.pth``) are rebuilt with
    ``torch.load(weights_only=True)``: tensors, plain data and the few types of the original
    framework's checkpoints (:mod:`models.checkpoint_types`). A file naming any other function or
    class raises :class:`UnsafeCheckpointError` naming them and the file: unpickling would call
    them. ``trust_checkpoint=True`` (the user vouches for the file) loads such a file with a full unpickle,
    after a :class:`TrustedCheckpointWarning`. A corrupt or truncated file raises
    :class:`CheckpointError`. ``mmap=True`` leaves the tensors of a pickled file in the file until
    they are used (for reading what a checkpoint records without its gigabytes of weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    refetch = (f"Delete it and run again to download it again from {url}" if url
               else "Fetch or copy the file again")
    try:
        if path.suffix == ".safetensors" or is_safetensors(path):
            return read_safetensors(path)
        try:
            return load_weights_only(path, mmap=mmap)
        except pickle.UnpicklingError as err:
            names = unsafe_globals(path, err)
            if not trust_checkpoint:
                if names:
                    raise UnsafeCheckpointError(
                        f"Refused to load {path}: it names {', '.join(names)}, which unpickling the file would "
                        f"call, and that can run any code. Checkpoints of this framework, of the original PaSST "
                        f"and the released weights hold only tensors and plain data. If you trust where the file "
                        f"comes from, opt in to a full unpickle: {'; '.join(TRUST_OPT_INS)}.") from None
                raise
            warnings.warn(
                f"Loading {path} with a full unpickle because you trust it (trust_checkpoint): it names "
                f"{', '.join(names) or 'objects other than tensors and plain data'}, which unpickling calls: any "
                f"code in the file runs now, with your permissions (it can read, change or delete your files "
                f"and use the network). Only do this for files you made or whose source you trust.",
                TrustedCheckpointWarning, stacklevel=2)
            return torch.load(path, map_location="cpu", weights_only=False)
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a damaged or crafted file makes the unpickler raise
        what = ("is corrupt or truncated, or holds pickle instructions that cannot be loaded safely"
                if isinstance(err, pickle.UnpicklingError) else "is corrupt or truncated")
        raise CheckpointError(f"Checkpoint {path} {what} ({_first_line(err)}). {refetch}.") from err


def _first_line(err: BaseException) -> str:
    """The gist of a loading error (torch's weights-only errors span paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [line for line in lines if not line.startswith(("Weights only", "Please file", "Check the doc"))]
        return lines[-1] if lines else str(err)
    return lines[0] if lines else type(err).__name__


def extract_state_dict(checkpoint: Mapping, swa: bool = False) -> dict[str, torch.Tensor]:
    """The network's own state dict from any supported checkpoint layout."""
    state = checkpoint
    for key in ("state_dict", "model"):  # Lightning, ImageNet (DeiT)
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    prefix = "net_swa." if swa else "net."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif swa:
        raise KeyError("swa=True but the checkpoint has no 'net_swa.' weights (was it trained with SWA?)")
    return {k.replace("_orig_mod.", ""): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                 may_be_missing: tuple[str, ...] = ()) -> None:
    """``model.load_state_dict(state)``, where only keys starting with ``may_be_missing`` may be absent.

    Anything else missing or unexpected is a :class:`CheckpointError` that names the keys.
    """
    own = model.state_dict()
    reshaped = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if reshaped:  # torch would list every tensor; one example and the count say it
        key, theirs, ours = reshaped[0]
        raise CheckpointError(
            f"{source} holds another network than this {type(model).__name__}: {len(reshaped)} of its tensors have "
            f"other shapes (e.g. {key}: {list(theirs)} in the file, {list(ours)} here). Build the network it was "
            f"trained with: the same architecture, size, strides and input shape.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(may_be_missing)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__}. "
            f"Missing keys: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected keys: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
