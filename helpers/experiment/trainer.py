"""The Lightning Trainer from the ``trainer`` config, with mixed precision wherever it is offered.

Precision: the config default is the fastest mixed precision the machine offers, chosen when
the config is made (see :func:`default_precision`): on GPUs ``bf16-mixed`` where supported
(Ampere and newer; no loss scaling needed), else ``16-mixed``; on CPUs ``bf16-mixed`` when
oneDNN has native bf16 kernels (AVX512-BF16/AMX; ~1.8x faster ViT blocks on such a CPU), else
``32-true``. The original's ``trainer.precision=16`` keeps working: fp16 autocast is not offered
on CPUs, so 16 / "16" / "16-mixed" become ``bf16-mixed`` there, with a log line.

Speed: on CUDA, fp32 matrix products (all of a ``32-true`` run, the fp32 parts of a mixed one)
use TF32 tensor cores (:func:`fast_fp32_matmuls`); ``trainer.strategy="ddp"`` becomes the
``DDPStrategy`` of :func:`ddp_strategy`, configured for PaSST rather than with DDP's defaults.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytorch_lightning as pl
import torch

_logger = logging.getLogger(__name__)

FP16_MIXED = (16, "16", "16-mixed")


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_precision() -> str:
    """The default ``trainer.precision`` for this machine (module docstring)."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


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
                  loggers: list | bool = False, default_root_dir: str | None = None,
                  ddp_cfg: dict[str, Any] | None = None, compiled: bool = False) -> pl.Trainer:
    """A Trainer from the ``trainer`` config (keys checked by the config checker) plus our callbacks and loggers.

    ``strategy="ddp"`` becomes :func:`ddp_strategy` with ``ddp_cfg`` (the ``ddp`` config); on
    CUDA, fp32 matmuls are switched to TF32 (:func:`fast_fp32_matmuls`).
    """
    cfg = dict(trainer_cfg)
    cfg["precision"] = resolve_precision(cfg.get("precision"), cfg.get("accelerator", "auto"))
    if default_root_dir is not None and not cfg.get("default_root_dir"):
        cfg["default_root_dir"] = default_root_dir
    if cfg.get("strategy") == "ddp" and ddp_cfg is not None:
        cfg["strategy"] = ddp_strategy(ddp_cfg, cfg.get("accumulate_grad_batches") or 1, compiled)
    trainer = pl.Trainer(callbacks=callbacks or [], logger=loggers, **cfg)
    fast_fp32_matmuls(trainer.strategy.root_device)
    return trainer


def fast_fp32_matmuls(device: torch.device | str) -> None:
    """Let fp32 matrix products use TF32 tensor cores on CUDA (``set_float32_matmul_precision("high")``).

    Called once when a command starts, for the device it runs on. A ``32-true`` run on an
    Ampere-or-newer GPU is several times faster with it; products keep fp32 inputs and outputs
    with a 10-bit mantissa inside (what PyTorch did by default until 1.12). Nothing changes on
    other devices: the CPU would take "high" as licence to use bf16 where oneDNN offers it.
    """
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


def ddp_strategy(ddp_cfg: dict[str, Any], accumulate_grad_batches: int = 1, compiled: bool = False
                 ) -> pl.strategies.DDPStrategy:
    """Lightning's DDP strategy with PaSST's settings (the ``ddp`` config section).

    * ``gradient_as_bucket_view``: gradients live in the all-reduce buckets, no copy in and out
      (and one gradient-sized buffer less);
    * ``broadcast_buffers=False``: DDP would otherwise broadcast rank 0's buffers before every
      forward. PaSST has no BatchNorm; its buffers are the mel front end's constants (window,
      filter banks), identical on every rank, and the SWA counter, which every rank updates the
      same way. DDP still broadcasts everything once when it wraps the model;
    * ``static_graph`` where it is valid: the same parameters take part in every step (patchout
      changes tokens, not parameters; the unused distillation head is frozen), so DDP records
      the graph once. Off with gradient accumulation (``no_sync`` breaks static graphs in
      PyTorch 2.11) and with ``compile`` (its DDP graph splitting does not support it);
    * ``bucket_cap_mb`` and the optional bf16 compression hook come from the config.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    static = accumulate_grad_batches == 1 and not compiled
    hook = default_hooks.bf16_compress_hook if ddp_cfg["bf16_compress"] else None
    return pl.strategies.DDPStrategy(gradient_as_bucket_view=True, broadcast_buffers=False, static_graph=static,
                                     bucket_cap_mb=ddp_cfg["bucket_cap_mb"], ddp_comm_hook=hook)
