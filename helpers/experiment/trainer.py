"""The Lightning Trainer from the ``trainer`` config, with mixed precision wherever it is offered.

Precision: the config default is the fastest mixed precision the machine offers, chosen when
the config is made (see :func:`default_precision`, which follows
:func:`models.hardware.fastest_autocast_dtype`): on GPUs ``bf16-mixed`` where supported
(Ampere and newer; no loss scaling needed), else ``16-mixed``; on CPUs ``bf16-mixed`` when
oneDNN has native bf16 kernels (AVX512-BF16/AMX; ~1.8x faster ViT blocks on such a CPU), else
``32-true``. The original's ``trainer.precision=16`` keeps working: fp16 autocast is not offered
on CPUs, so 16 / "16" / "16-mixed" become ``bf16-mixed`` there, with a log line.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytorch_lightning as pl
import torch

from models.hardware import fastest_autocast_dtype

_logger = logging.getLogger(__name__)

FP16_MIXED = (16, "16", "16-mixed")


def default_precision() -> str:
    """The default ``trainer.precision`` for this machine (module docstring)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed", None: "32-true"}[fastest_autocast_dtype(device)]


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether the Trainer's ``accelerator`` setting ends up on the CPU."""
    if isinstance(accelerator, str):
        if accelerator == "cpu":
            return True
        if accelerator == "auto":
            mps = getattr(torch.backends, "mps", None)
            return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def resolve_precision(precision: Any, accelerator: Any) -> Any:
    """``precision`` for the Trainer: fp16 mixed precision becomes bf16 on CPUs (logged)."""
    if precision in FP16_MIXED and runs_on_cpu(accelerator):
        _logger.warning("trainer.precision=%r: fp16 autocast is not available on the CPU; using "
                        "'bf16-mixed' (mixed precision in bfloat16) instead.", precision)
        return "bf16-mixed"
    return precision


def trainer_arguments() -> set[str]:
    """Names of every ``pl.Trainer`` argument."""
    return {n for n in inspect.signature(pl.Trainer.__init__).parameters if n != "self"}


def build_trainer(trainer_cfg: dict[str, Any], callbacks: list[pl.Callback] | None = None,
                  loggers: list | bool = False, default_root_dir: str | None = None) -> pl.Trainer:
    """A Trainer from the ``trainer`` config (keys checked by the config checker) plus our callbacks and loggers."""
    cfg = dict(trainer_cfg)
    cfg["precision"] = resolve_precision(cfg.get("precision"), cfg.get("accelerator", "auto"))
    if default_root_dir is not None and not cfg.get("default_root_dir"):
        cfg["default_root_dir"] = default_root_dir
    return pl.Trainer(callbacks=callbacks or [], logger=loggers, **cfg)
