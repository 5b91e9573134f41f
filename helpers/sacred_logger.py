"""A Lightning logger that writes metrics to the sacred run (``metrics.json`` with ``-F``, MongoDB with ``-m``)."""

from __future__ import annotations

import math
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


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
