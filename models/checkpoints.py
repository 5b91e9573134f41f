"""Reading checkpoint files, whatever network they belong to.

Generic pieces a model file combines with its own checkpoint filter (as timm's model files do):

* :func:`cached_download`: a release file in torch.hub's cache (``$TORCH_HOME/hub/checkpoints/``),
  downloaded once; offline, the error names the URL and where to put the file;
* :func:`read_checkpoint`: a file on disk, with a clear error when it is corrupt or truncated;
* :func:`extract_state_dict`: the network's own state dict out of plain state dicts, Lightning
  ``.ckpt`` files (weights under ``net.``, the SWA average under ``net_swa.``) and ImageNet files
  (a ``model`` key); a ``_orig_mod.`` prefix left by ``torch.compile`` is removed;
* :func:`load_checked`: ``load_state_dict`` that names the keys when a checkpoint does not fit.

This module knows no architecture: :mod:`models.passt` passes what it needs.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

_logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint) or does not fit."""


def cache_path(url: str) -> Path:
    """Where the file at ``url`` is cached: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def cached_download(url: str, what: str) -> Path:
    """The local path of ``url``'s file, downloading it into the cache only when missing.

    ``what`` names the file in the error (e.g. "the weights of passt_s_swa_p16_128_ap476").
    """
    path = cache_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _logger.info("Downloading %s to %s", url, path)
    try:
        # downloads to a temporary file and renames it: an interrupted download leaves no partial file
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as err:  # noqa: BLE001 - any network failure gets the same actionable message
        raise RuntimeError(
            f"Could not download {what} from {url} ({err}). Without network access, download that "
            f"file elsewhere and put it at {path}.") from err
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
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(may_be_missing)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__}. "
            f"Missing keys: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected keys: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
