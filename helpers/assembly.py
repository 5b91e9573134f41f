"""Building the pieces of a run from the resolved config: run folder, data, module, checkpoints, loggers.

Shared by every command in :mod:`helpers.commands` and therefore by every experiment script.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytorch_lightning.callbacks import ModelCheckpoint

from helpers.corrupt_clips import attach_corrupt_log, count_corrupt
from helpers.data import AudioDataModule, check_dataset, check_loader_config
from helpers.ddp import externally_launched_world_size, is_global_rank_zero, shared_job_id
from helpers.lightning_module import AudioModule
from helpers.model_factory import build_mel, build_net, check_models_config, net_output_classes
from helpers.schedules import get_lr_lambda
from helpers.trainer_factory import check_trainer_config
from helpers.wandb_logging import make_wandb_logger

if TYPE_CHECKING:
    from helpers.experiment import ExperimentSpec

#: rank 0 exports its run folder here; DDP children (launched from it) reuse the same folder
RUN_DIR_ENV = "PASST_RUN_DIR"


def plain(value: Any) -> Any:
    """Sacred's read-only config containers as plain dicts/lists (safe to hand to libraries)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def resolve_run_dir(output_dir: str, name: str, run: Any, resume_from: str | None = None) -> Path:
    """``<output_dir>/<experiment>/<time>-run<sacred id>``: checkpoints, logs and wandb files of one run.

    All ranks of a DDP run use rank 0's folder: children launched by rank 0 inherit it through
    ``PASST_RUN_DIR``; processes started by torchrun/SLURM name it after their shared job id.
    Resuming from ``<run>/checkpoints/<file>.ckpt`` continues in ``<run>``: Lightning keeps its
    record of the best checkpoints only when they stay in the same folder.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and not is_global_rank_zero():
        return Path(inherited)
    job = shared_job_id() if externally_launched_world_size() > 1 else None
    checkpoint_dir = Path(resume_from).resolve().parent if resume_from else None
    if checkpoint_dir is not None and checkpoint_dir.name == "checkpoints":
        path = checkpoint_dir.parent
        os.environ[RUN_DIR_ENV] = str(path)
        return path
    if job is not None:
        leaf = f"job-{job}"
    else:
        run_id = getattr(run, "_id", None)
        leaf = time.strftime("%Y%m%d-%H%M%S") + (f"-run{run_id}" if run_id is not None else f"-pid{os.getpid()}")
    path = Path(output_dir) / name / leaf
    os.environ[RUN_DIR_ENV] = str(path)
    return path


# ------------------------------------------------------------------------------------- building
def check_config(cfg: dict[str, Any]) -> None:
    """Fail fast, before any data is read, on misspelt keys of the library-argument sections."""
    check_trainer_config(cfg["trainer"])
    check_models_config(cfg["models"])
    check_loader_config(cfg["datasets"]["training"], "datasets.training")
    check_loader_config(cfg["datasets"]["test"], "datasets.test")


def build_module(spec: ExperimentSpec, cfg: dict[str, Any], training: bool = True) -> AudioModule:
    """The shared Lightning module with the configured network, front end, task and optimisation."""
    net = build_net(cfg["models"])
    mel = build_mel(cfg["models"]["mel"])
    lr_lambda = get_lr_lambda(cfg["schedule_mode"], cfg["warm_up_len"], cfg["ramp_down_start"],
                              cfg["ramp_down_len"], cfg["last_lr_value"]) if training else None
    module = AudioModule(
        net, mel, spec.task, lr_lambda=lr_lambda, lr=cfg["lr"], adamw=cfg["adamw"],
        weight_decay=cfg["weight_decay"], weight_decay_all=cfg["weight_decay_all"],
        mixup_alpha=cfg["mixup_alpha"] if cfg["use_mixup"] else None,
        swa=bool(cfg["swa"]) and training, log_spectrograms=cfg["log_spectrograms"] if training else 0,
    )
    if cfg["compile"]:
        module.net.compile()  # in place: parameter names (and checkpoint keys) stay net.*
    return module


def build_datamodule(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path, training: bool = True):
    """Datasets (made now, so missing files and wrong targets fail before any training) and their loaders.

    Returns ``(datamodule, corrupt_log, corrupt_lines_before)``.
    """
    n_classes = net_output_classes(cfg["models"])
    train_set = spec.train_set() if training else None
    test_set = spec.test_set()
    if train_set is not None:
        check_dataset(train_set, spec.task, n_classes, "training")
    check_dataset(test_set, spec.task, n_classes, "test")
    log_path = run_dir / "corrupt_clips.tsv"
    corrupt_log = attach_corrupt_log(test_set, log_path)
    if train_set is not None:
        corrupt_log = attach_corrupt_log(train_set, log_path)
    before = count_corrupt(corrupt_log)
    dm = AudioDataModule(train_set, test_set, cfg["datasets"]["training"], cfg["datasets"]["test"],
                         train_sampler=spec.train_sampler, seed=cfg["seed"])
    return dm, corrupt_log, before


def build_checkpointing(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path) -> tuple[ModelCheckpoint, ...]:
    """The best checkpoint by the task's monitor (``val_mAP`` for AudioSet), and ``last.ckpt`` every epoch.

    ``last.ckpt`` has a callback of its own: Lightning's ``save_last`` only writes it in epochs
    that also wrote a best checkpoint, and a crash must not lose the epochs since then.
    """
    ckpt_cfg = dict(cfg["checkpointing"])
    monitor = ckpt_cfg.pop("monitor", None) or f"val_{spec.task.monitor}"
    mode = ckpt_cfg.pop("mode", None) or spec.task.monitor_mode
    dirpath = ckpt_cfg.pop("dirpath", None) or str(run_dir / "checkpoints")
    filename = ckpt_cfg.pop("filename", None) or f"best-epoch{{epoch:03d}}-{monitor}-{{{monitor}:.4f}}"
    save_last = ckpt_cfg.pop("save_last", True)
    best = ModelCheckpoint(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode,
                           auto_insert_metric_name=False, **ckpt_cfg)
    if not save_last:
        return (best,)
    last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    return best, last


def build_wandb_logger(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path, run: Any):
    """The WandbLogger of the ``wandb`` config; its files go to ``$WANDB_DIR`` or the run folder."""
    wandb_cfg = dict(cfg["wandb"])
    wandb_cfg["save_dir"] = wandb_cfg.get("save_dir") or os.environ.get("WANDB_DIR") or str(run_dir)
    wandb_cfg["name"] = wandb_cfg.get("name") or f"{spec.name}-{run_dir.name}"
    if is_global_rank_zero():
        Path(wandb_cfg["save_dir"]).mkdir(parents=True, exist_ok=True)
    logger = make_wandb_logger(wandb_cfg)
    logger.log_hyperparams({**cfg, "sacred_run_id": getattr(run, "_id", None), "run_dir": str(run_dir)})
    return logger
