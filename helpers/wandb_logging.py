"""Weights & Biases through Lightning's WandbLogger: offline unless an account is configured.

``wandb.mode`` defaults to ``WANDB_MODE`` when that is set, else ``"online"`` when a wandb
account is configured on this machine (``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in
``~/.netrc``, which ``wandb login`` writes), else ``"offline"``: runs then land in
``<save_dir or $WANDB_DIR or .>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``. Training never stops to ask for a login.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

WANDB_HOST = "api.wandb.ai"


def wandb_account_configured() -> bool:
    """True when wandb can authenticate without asking (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def default_wandb_mode() -> str:
    """``WANDB_MODE`` if set, else ``online`` with a configured account and ``offline`` without."""
    env = os.environ.get("WANDB_MODE", "").strip()
    if env:
        return env
    return "online" if wandb_account_configured() else "offline"


def make_wandb_logger(wandb_cfg: dict[str, Any]):
    """A WandbLogger from the ``wandb`` config (WandbLogger arguments; extras go to ``wandb.init``).

    It creates its run lazily and only on global rank 0.
    """
    from pytorch_lightning.loggers import WandbLogger

    kwargs = {k: v for k, v in wandb_cfg.items() if v is not None}
    return WandbLogger(**kwargs)


def spectrogram_image(spec: torch.Tensor) -> np.ndarray:
    """A ``[n_mels, frames]`` spectrogram as a uint8 image, low frequencies at the bottom."""
    img = spec.detach().float().cpu()
    if img.dim() == 3:  # [channels, F, T]: show the first channel
        img = img[0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    return (img.flip(0).numpy() * 255).astype(np.uint8)
