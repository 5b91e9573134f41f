"""Where a run's metrics go: Weights & Biases (offline unless an account is configured) and the sacred run.

``wandb.mode`` defaults to ``WANDB_MODE`` when that is set, else ``"online"`` when a wandb
account is configured on this machine (``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in
``~/.netrc``, which ``wandb login`` writes), else ``"offline"``: runs then land in
``<save_dir or $WANDB_DIR or .>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``. Training never stops to ask for a login.

:class:`SacredLogger` writes every logged scalar to the sacred run (``metrics.json`` with
``-F``, MongoDB with ``-m``). :func:`atomic_sacred_files` makes the ``-F`` observer replace its
JSON files atomically.
"""

from __future__ import annotations

import json
import math
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from sacred.observers.file_storage import FileStorageObserver
from sacred.serializer import flatten

from helpers.data.atomic import atomic_write

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
    logger = WandbLogger(**kwargs)
    if logger._wandb_init.get("anonymous") is None:
        # Lightning passes anonymous=None, which wandb announces as a deprecated setting at every start
        logger._wandb_init.pop("anonymous", None)
    return logger


def finish_wandb() -> dict[str, Any]:
    """Close the wandb run of this process (rank 0); returns where it went."""
    import wandb

    if wandb.run is None:
        return {}
    info = {"id": wandb.run.id, "dir": wandb.run.dir, "mode": str(wandb.run.settings.mode)}
    wandb.finish()
    return info


class SacredLogger(Logger):
    """Forwards every logged scalar to ``run.log_scalar`` (rank 0 only, like every Lightning logger)."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self._run = run

    @property
    def name(self) -> str:
        return "sacred"

    @property
    def version(self) -> str:
        return str(getattr(self._run, "_id", None) or "unobserved")

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Sacred already stores the whole config; nothing to do."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            value = float(value)
            if not math.isnan(value):
                self._run.log_scalar(key, value, step)


def _save_json_atomically(self: FileStorageObserver, obj: Any, filename: str) -> None:
    with atomic_write(os.path.join(self.dir, filename)) as f:
        f.write(json.dumps(flatten(obj), sort_keys=True, indent=2).encode("utf-8"))


def atomic_sacred_files() -> None:
    """Make sacred's ``-F`` observer replace ``run.json``, ``info.json``, ``metrics.json`` atomically.

    Sacred rewrites them in place every 10 s; a full disk (or a kill) in the middle left a
    truncated file that no longer parses. Now the previous version stays until a new one is complete.
    """
    FileStorageObserver.save_json = _save_json_atomically
