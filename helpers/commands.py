"""What the experiment commands do, given the resolved config (plain dicts) and an experiment spec.

:mod:`helpers.experiment` registers thin sacred commands that call these functions; keeping them
here, free of sacred decorators, lets every experiment script (AudioSet, ESC-50, ...) share them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor

from helpers.assembly import (
    build_checkpointing,
    build_datamodule,
    build_module,
    build_wandb_logger,
    resolve_run_dir,
)
from helpers.corrupt_clips import corrupt_examples, count_corrupt
from helpers.data import AudioDataModule
from helpers.ddp import PerRankSeed, wait_for_child_processes
from helpers.model_factory import build_net, net_output_classes
from helpers.optim import make_optimizer
from helpers.sacred_logger import SacredLogger
from helpers.swa import SWACallback
from helpers.trainer_factory import build_trainer, resolve_precision, runs_on_cpu

if TYPE_CHECKING:
    from helpers.experiment import ExperimentSpec

def _finish_wandb() -> dict[str, Any]:
    """Close the wandb run of this process (rank 0); returns where it went."""
    import wandb

    if wandb.run is None:
        return {}
    info = {"id": wandb.run.id, "dir": wandb.run.dir, "mode": str(wandb.run.settings.mode)}
    wandb.finish()
    return info


def validation_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The ``val_*`` / ``swa_val_*`` entries of Lightning's metrics as floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if "val_" in k}


def _record_run_info(run: Any, module: Any, corrupt_log: Any, corrupt_before: int) -> None:
    """What every run stores in sacred's ``info``: corrupt clips met, evaluated examples, network size."""
    run.info.update(corrupt_clips=count_corrupt(corrupt_log, corrupt_before), corrupt_log=corrupt_log,
                    corrupt_clip_examples=corrupt_examples(corrupt_log, corrupt_before),
                    val_examples=module.last_val_examples,
                    n_params=sum(p.numel() for p in module.net.parameters()))


# ------------------------------------------------------------------------------------- commands
def train(spec: ExperimentSpec, run: Any, cfg: dict[str, Any], seed: int) -> dict[str, float]:
    """Train and validate every epoch; returns the last validation metrics."""
    pl.seed_everything(seed, workers=True)
    run_dir = resolve_run_dir(cfg["output_dir"], spec.name, run, resume_from=cfg.get("ckpt_path"))
    datamodule, corrupt_log, corrupt_before = build_datamodule(spec, cfg, run_dir, training=True)
    module = build_module(spec, cfg, training=True)
    checkpointing = build_checkpointing(spec, cfg, run_dir)
    callbacks: list[pl.Callback] = [*checkpointing, LearningRateMonitor(logging_interval="epoch"), PerRankSeed(seed)]
    if cfg["swa"]:
        callbacks.append(SWACallback(cfg["swa_epoch_start"], cfg["swa_freq"]))
    loggers = [SacredLogger(run), build_wandb_logger(spec, cfg, run_dir, run)]
    trainer = build_trainer(cfg["trainer"], callbacks, loggers, default_root_dir=str(run_dir))
    run.info.update(run_dir=str(run_dir), n_params=sum(p.numel() for p in module.net.parameters()),
                    precision=str(trainer.precision), world_size=trainer.world_size)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        wait_for_child_processes(trainer)
        _record_run_info(run, module, corrupt_log, corrupt_before)
        run.info.update(
            best_checkpoint=checkpointing[0].best_model_path or None,
            last_checkpoint=checkpointing[-1].best_model_path if len(checkpointing) > 1 else None,
        )
        if trainer.is_global_zero:
            run.info["wandb"] = _finish_wandb()
    results = validation_metrics(trainer.callback_metrics)
    results["val_examples"] = module.last_val_examples
    return results


def evaluate(spec: ExperimentSpec, run: Any, cfg: dict[str, Any], seed: int) -> dict[str, float]:
    """Validate the configured network (or ensemble) on the test set; prints and returns the metrics."""
    pl.seed_everything(seed)
    run_dir = resolve_run_dir(cfg["output_dir"], spec.name, run)
    datamodule, corrupt_log, corrupt_before = build_datamodule(spec, cfg, run_dir, training=False)
    module = build_module(spec, cfg, training=False)
    trainer_cfg = {**cfg["trainer"], "enable_checkpointing": False}
    trainer = build_trainer(trainer_cfg, [], [SacredLogger(run)], default_root_dir=str(run_dir))
    try:
        outputs = trainer.validate(module, datamodule=datamodule)
    finally:
        wait_for_child_processes(trainer)
    results = validation_metrics(outputs[0] if outputs else trainer.callback_metrics)
    results["val_examples"] = module.last_val_examples
    _record_run_info(run, module, corrupt_log, corrupt_before)
    if trainer.is_global_zero:
        print("\nEvaluation results:")
        for key, value in results.items():
            print(f"  {key:>20s}: {value:.6g}")
    return results


def _autocast_dtype(precision: Any) -> torch.dtype | None:
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


def speed_test(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, float]:
    """Training steps per second of the network on random spectrograms (no data loading)."""
    st = cfg["speed_test"]
    accelerator = cfg["trainer"].get("accelerator", "auto")
    device = torch.device("cpu" if runs_on_cpu(accelerator) or not torch.cuda.is_available() else "cuda")
    precision = resolve_precision(cfg["trainer"].get("precision"), "cpu" if device.type == "cpu" else "gpu")
    dtype = _autocast_dtype(precision)
    net = build_net(cfg["models"]).to(device).train()
    batch = int(st["batch_size"])
    x = torch.randn(batch, cfg["models"]["net"].get("in_channels", 1), cfg["models"]["mel"]["n_mels"],
                    cfg["models"]["net"]["input_tdim"], device=device)
    target = torch.zeros(batch, net_output_classes(cfg["models"]), device=device)
    optimizer = make_optimizer(net.parameters(), lr=cfg["lr"], adamw=cfg["adamw"])  # the one training uses
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16 and device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits, _ = net(x)
            loss = spec.task.loss(logits, target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def timed(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(int(st["warmup_steps"]))
    seconds = timed(int(st["steps"]))
    result = {"specs_per_second": st["steps"] * batch / seconds, "seconds": seconds, "batch_size": batch,
              "steps": st["steps"], "device": str(device), "precision": str(precision)}
    print(f"\n{result['steps']} steps of batch {batch} on {device} ({precision}): {seconds:.2f} s, "
          f"{result['specs_per_second']:.1f} spectrograms/second")
    return result


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}: {list(value[:3])}{'...' if len(value) > 3 else ''}"
    return repr(value)


def first_batches(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, list[str]]:
    """One batch of each loader, described (shapes and first names)."""
    dm = AudioDataModule(spec.train_set(), spec.test_set(), cfg["datasets"]["training"], cfg["datasets"]["test"],
                         train_sampler=spec.train_sampler)
    result = {}
    for split, loader in (("training", dm.train_dataloader()), ("test", dm.val_dataloader())):
        batch = next(iter(loader))
        result[split] = [_describe(part) for part in batch]
        print(f"{split}: " + "; ".join(result[split]))
    return result


def loader_speed(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, float]:
    """Seconds to iterate the training loader twice (the second pass shows warm caches/workers)."""
    dm = AudioDataModule(spec.train_set(), None, cfg["datasets"]["training"], {},
                         train_sampler=spec.train_sampler)
    loader = dm.train_dataloader()
    result = {"batches": len(loader)}
    for attempt in ("first_pass_seconds", "second_pass_seconds"):
        start = time.perf_counter()
        for i, _ in enumerate(loader):
            if i % 20 == 0:
                print(f"{i}/{len(loader)}", end="\r", flush=True)
        result[attempt] = time.perf_counter() - start
        print(f"{attempt}: {result[attempt]:.2f} s for {len(loader)} batches")
    return result


__all__ = ["evaluate", "first_batches", "loader_speed", "speed_test", "train"]
