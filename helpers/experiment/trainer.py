"""The Lightning Trainer from the ``trainer`` config.

Precision: ``trainer.precision`` defaults to ``"auto"``; :func:`build_trainer` asks
:func:`models.precision.decide_precision` for the precision of the command on the device the
accelerator setting picks (training: the fastest mixed precision the hardware runs natively;
evaluation: fp32; the original's ``trainer.precision=16`` on a CPU: bf16-mixed where native, else
32-true, with a warning). The rules are in :mod:`models.precision` alone.

Lightning 1.x keys (the original's ``gpus``, ``accelerator=ddp``, ``weights_summary``,
``reload_dataloaders_every_epoch``, ...) are translated to Lightning 2 with one warning each, or
rejected with an error naming the replacement (:data:`LEGACY_TRAINER_KEYS`).

Speed: on CUDA, fp32 matrix products (all of a ``32-true`` run, the fp32 parts of a mixed one)
use TF32 tensor cores (:func:`fast_fp32_matmuls`); ``trainer.strategy="ddp"`` becomes the
``DDPStrategy`` of :func:`ddp_strategy`, configured for PaSST rather than with DDP's defaults.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from models.precision import decide_precision

_logger = logging.getLogger(__name__)


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether the Trainer's ``accelerator`` setting ends up on the CPU."""
    if isinstance(accelerator, str):
        if accelerator == "cpu":
            return True
        if accelerator == "auto":
            mps = getattr(torch.backends, "mps", None)
            return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def accelerator_device(accelerator: Any) -> str:
    """The device type (``cpu``, ``cuda``, ...) the Trainer's ``accelerator`` setting ends up on."""
    if runs_on_cpu(accelerator):
        return "cpu"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "mps"
    return "cuda" if accelerator in ("gpu", "cuda") else str(accelerator)


def _gpus(value: Any) -> dict:
    if not value:
        return {}
    return {"accelerator": "gpu", "devices": value}


def _pl1_accelerator(value: Any) -> dict:
    """Lightning 1.x's ``accelerator`` named the distributed mode; Lightning 2 calls that ``strategy``."""
    if value is None:
        return {"accelerator": "auto"}
    if value in ("ddp", "ddp_spawn", "ddp_cpu"):
        return {"accelerator": "cpu" if value == "ddp_cpu" else "auto", "strategy": value.replace("_cpu", "")}
    raise ValueError("no Lightning 2 equivalent of this Lightning 1.x mode; use trainer.strategy=ddp "
                     "(or DDP=N in the environment)")


#: Lightning 1.x trainer keys and their Lightning 2 settings
_TRANSLATED: dict[str, Callable[[Any], dict]] = {
    "gpus": _gpus,
    "accelerator": _pl1_accelerator,  # only for its 1.x values (ddp, ddp_spawn, dp, ..., None)
    "distributed_backend": _pl1_accelerator,
    "num_processes": lambda value: {"accelerator": "cpu", "devices": value},
    "weights_summary": lambda value: {"enable_model_summary": value is not None},
    "reload_dataloaders_every_epoch": lambda value: {"reload_dataloaders_every_n_epochs": int(bool(value))},
    "checkpoint_callback": lambda value: {"enable_checkpointing": bool(value)},
    "progress_bar_refresh_rate": lambda value: {"enable_progress_bar": bool(value)},
    "max_steps": lambda value: {"max_steps": -1},  # only None, Lightning 1.x's "no limit"
}
#: Lightning 1.x trainer keys without an equivalent, ignored with a warning (and why)
_IGNORED = {
    "amp_backend": "Lightning 2 only has native mixed precision (trainer.precision)",
    "amp_level": "Lightning 2 only has native mixed precision (trainer.precision)",
    "replace_sampler_ddp": "our samplers shard among DDP ranks themselves (trainer.use_distributed_sampler=False)",
    "flush_logs_every_n_steps": "loggers flush by themselves in Lightning 2",
    "log_gpu_memory": "removed in Lightning 2 (the DeviceStatsMonitor callback does it)",
    "track_grad_norm": "removed in Lightning 2",
    "move_metrics_to_cpu": "removed in Lightning 2",
    "multiple_trainloader_mode": "removed in Lightning 2",
    "prepare_data_per_node": "a LightningDataModule attribute in Lightning 2",
    "terminate_on_nan": "removed in Lightning 2 (trainer.detect_anomaly=True finds NaNs)",
    "weights_save_path": "removed in Lightning 2; checkpointing.dirpath sets where checkpoints go",
}
#: Lightning 1.x trainer keys that must not be ignored when set: the error names the replacement
_REPLACED = {
    "stochastic_weight_avg": "SWA is the top-level key swa=True (with swa_epoch_start, swa_freq)",
    "resume_from_checkpoint": "resume with the top-level key ckpt_path=<.../checkpoints/last.ckpt>",
    "auto_lr_find": "use pytorch_lightning.tuner.Tuner.lr_find outside the experiment",
    "auto_scale_batch_size": "use pytorch_lightning.tuner.Tuner.scale_batch_size outside the experiment",
    "auto_select_gpus": "trainer.devices='auto' picks the GPUs",
    "tpu_cores": "use trainer.accelerator=tpu trainer.devices=N",
    "ipus": "use trainer.accelerator=ipu trainer.devices=N",
    "truncated_bptt_steps": "implement truncated backpropagation in the LightningModule",
}
LEGACY_TRAINER_KEYS = set(_TRANSLATED) | set(_IGNORED) | set(_REPLACED)
_PL1_ACCELERATORS = (None, "ddp", "ddp_spawn", "ddp_cpu", "dp", "ddp2", "horovod", "ddp_sharded")


def _is_legacy(key: str, value: Any) -> bool:
    if key == "accelerator":  # also a Lightning 2 key: only its 1.x values are translated
        return value in _PL1_ACCELERATORS
    if key == "max_steps":
        return value is None
    return key in LEGACY_TRAINER_KEYS


def translate_legacy_keys(trainer_cfg: dict[str, Any], announce: bool = True) -> dict[str, Any]:
    """``trainer_cfg`` with Lightning 1.x keys replaced by their Lightning 2 settings.

    ``announce``: one warning per translated or ignored key (the config check calls this silently
    first, to fail before any work on keys that have no equivalent).
    """
    cfg = {k: v for k, v in trainer_cfg.items() if not _is_legacy(k, v)}
    for key, value in trainer_cfg.items():
        if not _is_legacy(key, value):
            continue
        if key in _REPLACED:
            if value:
                raise ValueError(f"trainer.{key}={value!r} is a Lightning 1.x key that no longer exists; "
                                 f"{_REPLACED[key]}")
            continue
        if key in _IGNORED:
            if announce:
                _logger.warning("trainer.%s=%r (Lightning 1.x) is ignored: %s", key, value, _IGNORED[key])
            continue
        try:
            updates = _TRANSLATED[key](value)
        except ValueError as err:
            raise ValueError(f"trainer.{key}={value!r}: {err}") from None
        if announce and updates:
            _logger.warning("trainer.%s=%r is a Lightning 1.x key; using %s instead", key, value,
                            ", ".join(f"trainer.{k}={v!r}" for k, v in updates.items()))
        cfg.update(updates)
    return cfg


def build_trainer(trainer_cfg: dict[str, Any], callbacks: list[pl.Callback] | None = None,
                  loggers: list | bool = False, default_root_dir: str | None = None,
                  ddp_cfg: dict[str, Any] | None = None, command: str = "train") -> pl.Trainer:
    """A Trainer from the ``trainer`` config (keys checked by the config checker) plus our callbacks and loggers.

    ``command`` (train or evaluate) decides what ``precision="auto"`` means (:mod:`models.precision`).

    ``strategy="ddp"`` (and ``"auto"`` with several processes) becomes :func:`ddp_strategy` with
    ``ddp_cfg`` (the ``ddp`` config); on CUDA, fp32 matmuls are switched to TF32 (:func:`fast_fp32_matmuls`).
    """
    cfg = translate_legacy_keys(trainer_cfg)
    cfg["precision"] = decide_precision(accelerator_device(cfg.get("accelerator", "auto")),
                                        cfg.get("precision", "auto"), command)
    if default_root_dir is not None and not cfg.get("default_root_dir"):
        cfg["default_root_dir"] = default_root_dir
    if ddp_cfg is not None and (cfg.get("strategy") == "ddp" or (cfg.get("strategy", "auto") == "auto"
                                                               and several_processes(cfg))):
        cfg["strategy"] = ddp_strategy(ddp_cfg)
    trainer = pl.Trainer(callbacks=callbacks or [], logger=loggers, **cfg)
    fast_fp32_matmuls(trainer.strategy.root_device)
    return trainer


def several_processes(trainer_cfg: dict[str, Any]) -> bool:
    """Whether the ``trainer`` config asks for several processes (``devices=N``, a list of devices,
    ``num_nodes=M``): where ``strategy=auto`` becomes Lightning's DDP, it becomes :func:`ddp_strategy`."""
    devices = trainer_cfg.get("devices", 1)
    return ((trainer_cfg.get("num_nodes") or 1) > 1 or (isinstance(devices, int) and devices > 1)
            or (isinstance(devices, (list, tuple)) and len(devices) > 1))


def fast_fp32_matmuls(device: torch.device | str) -> None:
    """Let fp32 matrix products use TF32 tensor cores on CUDA (``set_float32_matmul_precision("high")``).

    Called once when a command starts, for the device it runs on. A ``32-true`` run on an
    Ampere-or-newer GPU is several times faster with it; products keep fp32 inputs and outputs
    with a 10-bit mantissa inside (what PyTorch did by default until 1.12). Nothing changes on
    other devices: the CPU would take "high" as licence to use bf16 where oneDNN offers it.
    """
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


def ddp_strategy(ddp_cfg: dict[str, Any]) -> pl.strategies.DDPStrategy:
    """Lightning's DDP strategy with PaSST's settings (the ``ddp`` config section).

    * ``gradient_as_bucket_view``: gradients live in the all-reduce buckets, no copy in and out
      (and one gradient-sized buffer less);
    * ``broadcast_buffers=False``: DDP would otherwise broadcast rank 0's buffers before every
      forward. PaSST has no BatchNorm; its buffers are the mel front end's constants (window,
      filter banks), identical on every rank, and the SWA counters, which every rank updates the
      same way. DDP broadcasts the parameters once when it wraps the model;
    * no ``static_graph``: with ``find_unused_parameters`` off (the default; the unused
      distillation head is frozen) DDP searches no graph anyway, and a static graph makes its
      reducer read its parameter-usage map back one value per parameter at every step
      (``tests/test_no_host_sync.py`` counts them);
    * ``bucket_cap_mb`` and the optional bf16 compression hook come from the config;
    * ``timeout_s``: how long a collective waits for the other ranks before it fails.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    hook = default_hooks.bf16_compress_hook if ddp_cfg["bf16_compress"] else None
    return pl.strategies.DDPStrategy(gradient_as_bucket_view=True, broadcast_buffers=False,
                                     bucket_cap_mb=ddp_cfg["bucket_cap_mb"], ddp_comm_hook=hook,
                                     timeout=datetime.timedelta(seconds=ddp_cfg.get("timeout_s", 1800)))
