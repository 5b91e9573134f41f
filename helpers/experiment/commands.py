"""What each command does, read top to bottom: :func:`train`, :func:`evaluate`, and the tools.

Every function takes the experiment's :class:`~helpers.experiment.spec.ExperimentSpec`, the
sacred run and its config as plain dicts (checked once by :mod:`helpers.experiment.config`);
:mod:`helpers.experiment.cli` registers them as sacred commands for every experiment script.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch.utils.data import Dataset

from helpers.data.corrupt_clips import attach_corrupt_log, corrupt_examples, count_corrupt
from helpers.data.loaders import AudioDataModule, loader_supply_warning
from helpers.experiment.checkpoint_network import networks_from_checkpoints
from helpers.experiment.ddp import (
    PerRankSeed,
    RankZeroDecides,
    cluster_environment,
    cores_per_process,
    is_global_rank_zero,
    lost_ranks,
    supervise_ranks,
    wait_for_child_processes,
)
from helpers.experiment.distill import distillation_for, teacher_training_set
from helpers.experiment.loggers import SacredLogger, finish_wandb, make_wandb_logger
from helpers.experiment.rank_watch import RankWatch
from helpers.experiment.report import how_to_resume, remove_if_empty, sacred_run_folders, summary
from helpers.experiment.spec import ExperimentSpec
from helpers.experiment.trainer import (
    accelerator_device,
    build_trainer,
    fast_fp32_matmuls,
    translate_legacy_keys,
)
from helpers.training.checkpoint_io import AtomicCheckpointIO
from helpers.training.console import ValidationReport
from helpers.training.interrupt import CtrlCStopsLikeSigterm, stop_signal_name
from helpers.training.module import AudioModule
from helpers.training.nonfinite import NonFiniteGuard
from helpers.training.optim import make_optimizer
from helpers.training.resume import StepCheckpoint, StepSeeds, TrainingPosition
from helpers.training.schedules import get_lr_lambda
from helpers.training.sigterm import agree_on_sigterm
from helpers.training.speed import time_steps, training_step
from helpers.training.swa import SWACallback, is_swa_epoch
from helpers.training.tasks import Task
from helpers.training.validation_schedule import ValidationSchedule
from models.build import build_mel, build_net, net_output_classes
from models.precision import autocast_dtype, decide_precision

#: rank 0 exports its run folder here; DDP children (launched from it) reuse the same folder
RUN_DIR_ENV = "PASST_RUN_DIR"
#: the file in the run folder that collects the clips that failed to decode
CORRUPT_LOG_NAME = "corrupt_clips.tsv"


class TrainingStopped(RuntimeError):
    """Training was stopped from outside (a signal); the message says how to resume."""


# --------------------------------------------------------------------------------- the commands
def train(spec: ExperimentSpec, run: Any, cfg: dict[str, Any], seed: int) -> dict[str, float]:
    """Train and validate (every epoch, or as ``trainer.check_val_every_n_epoch`` says); returns the
    last validation metrics."""
    pl.seed_everything(seed, workers=True)
    if cfg.get("ckpt_path") and not os.path.isfile(cfg["ckpt_path"]):
        raise FileNotFoundError(f"ckpt_path={cfg['ckpt_path']!r}: no such checkpoint file (resume with "
                                f"ckpt_path=<run folder>/checkpoints/last.ckpt)")
    cfg = with_checkpoint_networks(run, cfg)
    run_dir = run_folder(cfg["output_dir"], spec.name, run, resume_from=cfg.get("ckpt_path"))
    task = spec.get_task()
    datamodule, corrupt_log, corrupt_before = datamodule_for(spec, cfg, run_dir, training=True, task=task)
    module = module_for(spec, cfg, training=True, task=task)
    checkpointing = checkpoint_callbacks(spec, cfg, run_dir, task=task)
    trainer_cfg = dict(cfg["trainer"])
    callbacks: list[pl.Callback] = []
    callbacks += [
        *rank_callbacks(cfg, seed, run, run_dir, datamodule, callbacks),
        *checkpointing, LearningRateMonitor(logging_interval="epoch"),
        ValidationReport([s.name for s in spec.evaluation_sets()]), CtrlCStopsLikeSigterm(),
    ]
    if cfg["per_rank_seed"]:
        callbacks.append(PerRankSeed(seed))
    if cfg["swa"]:
        callbacks.append(SWACallback(cfg["swa_epoch_start"], cfg["swa_freq"]))
    if isinstance(trainer_cfg.get("check_val_every_n_epoch", 1), int):  # None: Lightning validates by steps
        swa_epoch = partial(is_swa_epoch, swa_epoch_start=cfg["swa_epoch_start"], swa_freq=cfg["swa_freq"])
        callbacks.append(ValidationSchedule(trainer_cfg.get("check_val_every_n_epoch", 1),
                                            swa_epoch if cfg["swa"] else None))
        trainer_cfg["check_val_every_n_epoch"] = 1  # the schedule sets it per epoch
    callbacks += fault_tolerance_callbacks(cfg, seed, datamodule, checkpointing)
    loggers = [SacredLogger(run), wandb_logger(spec, cfg, run_dir, run)]
    checkpoint_io = AtomicCheckpointIO(trust_checkpoint=cfg["models"]["trust_checkpoint"])  # loads ckpt_path
    trainer_cfg["plugins"] = [*(trainer_cfg.get("plugins") or []), checkpoint_io, *launch_plugins()]
    trainer = build_trainer(trainer_cfg, callbacks, loggers, default_root_dir=str(run_dir), ddp_cfg=cfg["ddp"])
    agree_on_sigterm(trainer)
    warn_if_loaders_starve(trainer, cfg)
    run.info.update(run_dir=str(run_dir), precision=str(trainer.precision), world_size=trainer.world_size)
    supervise_ranks(trainer, observer_dirs(run))
    failed = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        failed = False
    except SIGTERMException as err:  # Lightning's exits with status 0, as if training had finished
        last = os.path.join(checkpointing[0].dirpath, "last.ckpt")
        how = how_to_resume(last) if os.path.isfile(last) else "no checkpoint was written yet: run the same command again"
        raise TrainingStopped(f"Training stopped by {stop_signal_name(trainer)} at the end of a batch; {how}") from err
    except Exception as err:
        if lost := lost_ranks(trainer):  # the cause, when a collective failed because a rank died
            raise RuntimeError(f"{lost}; this rank stopped with {type(err).__name__}: {err}") from err
        raise
    finally:
        wait_for_child_processes(trainer, failed=failed)
        record_run_info(run, module, corrupt_log, corrupt_before)
        run.info.update(
            best_checkpoint=checkpointing[0].best_model_path or None,
            last_checkpoint=checkpointing[-1].best_model_path if len(checkpointing) > 1 else None,
        )
        if trainer.is_global_zero:
            run.info["wandb"] = finish_wandb()
    results = evaluation_results(spec, trainer.callback_metrics, module)
    if trainer.is_global_zero:
        print(training_summary(run, run_dir, checkpointing, results), flush=True)
    return results


def evaluate(spec: ExperimentSpec, run: Any, cfg: dict[str, Any], seed: int) -> dict[str, float]:
    """Validate the configured network (or ensemble) on the test set; prints and returns the metrics."""
    pl.seed_everything(seed)
    cfg = with_checkpoint_networks(run, cfg, evaluating=True, class_names=spec.class_names() if spec.class_names else None)
    run_dir = run_folder(cfg["output_dir"], spec.name, run)
    task = spec.get_task()
    datamodule, corrupt_log, corrupt_before = datamodule_for(spec, cfg, run_dir, training=False, task=task)
    module = module_for(spec, cfg, training=False, task=task)
    trainer_cfg = {**cfg["trainer"], "enable_checkpointing": False,
                   "plugins": [*(cfg["trainer"].get("plugins") or []), *launch_plugins()]}
    callbacks: list[pl.Callback] = []
    callbacks += rank_callbacks(cfg, seed, run, run_dir, datamodule, callbacks)
    trainer = build_trainer(trainer_cfg, callbacks, [SacredLogger(run)], default_root_dir=str(run_dir),
                            ddp_cfg=cfg["ddp"], command="evaluate")
    run.info.update(precision=str(trainer.precision))
    supervise_ranks(trainer, observer_dirs(run))
    try:
        trainer.validate(module, datamodule=datamodule)
    finally:
        wait_for_child_processes(trainer)
    results = evaluation_results(spec, trainer.callback_metrics, module)
    record_run_info(run, module, corrupt_log, corrupt_before)
    if trainer.is_global_zero:
        print("\nEvaluation results:")
        for key, value in results.items():
            print(f"  {key:>20s}: {value:.6g}")
    return results


def speed_test(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, float]:
    """Training steps per second of the network on random spectrograms (no data loading)."""
    cfg, _ = networks_from_checkpoints(cfg)
    st, trainer_cfg = cfg["speed_test"], translate_legacy_keys(cfg["trainer"])
    device = torch.device(accelerator_device(trainer_cfg.get("accelerator", "auto")))
    precision = decide_precision(device, trainer_cfg.get("precision", "auto"), "train")
    dtype = autocast_dtype(precision)
    net = build_net(cfg["models"]).to(device).train()
    task = spec.get_task()
    fast_fp32_matmuls(device)
    batch = int(st["batch_size"])
    spectrograms = torch.randn(batch, cfg["models"]["net"].get("in_channels", 1), cfg["models"]["mel"]["n_mels"],
                               cfg["models"]["net"]["input_tdim"], device=device)
    targets = torch.zeros(batch, net_output_classes(cfg["models"]), device=device)
    optimizer = make_optimizer(net.parameters(), lr=cfg["lr"], adamw=cfg["adamw"])  # the one training uses
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 and device.type == "cuda" else None

    def step() -> None:
        training_step(net, spectrograms, targets, task.loss, optimizer, dtype, scaler)

    seconds = time_steps(step, int(st["steps"]), device, warmup=int(st["warmup_steps"]))
    result = {"specs_per_second": st["steps"] * batch / seconds, "seconds": seconds, "batch_size": batch,
              "steps": st["steps"], "device": str(device), "precision": str(precision)}
    print(f"\n{result['steps']} steps of batch {batch} on {device} ({precision}): {seconds:.2f} s, "
          f"{result['specs_per_second']:.1f} spectrograms/second")
    return result


def first_batches(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, list[str]]:
    """One batch of each loader (``datasets.<name>``), described (shapes and first names)."""
    eval_sets = spec.evaluation_sets()
    dm = AudioDataModule(spec.train_set(), [(s.dataset(), loader_config(cfg, s.loader)) for s in eval_sets],
                         cfg["datasets"]["training"], train_sampler=spec.train_sampler, seed=cfg["seed"])
    loaders = dm.val_dataloader()
    loaders = loaders if isinstance(loaders, list) else [loaders]
    result = {}
    named = [("training", dm.train_dataloader())] + [(s.loader, ld) for s, ld in zip(eval_sets, loaders, strict=True)]
    for split, loader in named:
        batch = next(iter(loader))
        result[split] = [_describe(part) for part in batch]
        print(f"{split}: " + "; ".join(result[split]))
    return result


def loader_speed(spec: ExperimentSpec, cfg: dict[str, Any]) -> dict[str, float]:
    """Seconds to iterate the training loader twice (the second pass shows warm caches/workers)."""
    dm = AudioDataModule(spec.train_set(), [], cfg["datasets"]["training"], train_sampler=spec.train_sampler,
                         seed=cfg["seed"])
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


# ------------------------------------------------------------------------ the pieces of a run
def run_folder(output_dir: str, name: str, run: Any, resume_from: str | None = None) -> Path:
    """``<output_dir>/<experiment>/<time>-run<sacred id>``: checkpoints, logs and wandb files of one run.

    Resuming from ``<run>/checkpoints/<file>.ckpt`` continues in ``<run>``: Lightning keeps its
    record of the best checkpoints only when they stay in the same folder. Under DDP every rank
    ends up in rank 0's folder: the processes rank 0 launches inherit it (``PASST_RUN_DIR``), and
    every rank takes rank 0's once the process group is up (:class:`RankZeroDecides`), whatever
    started it; no process writes into a folder of its own before that.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and not is_global_rank_zero():
        return Path(inherited)
    checkpoint_dir = Path(resume_from).resolve().parent if resume_from else None
    if checkpoint_dir is not None and checkpoint_dir.name == "checkpoints":
        path = checkpoint_dir.parent
    else:
        run_id = getattr(run, "_id", None)
        leaf = time.strftime("%Y%m%d-%H%M%S") + (f"-run{run_id}" if run_id is not None else f"-pid{os.getpid()}")
        path = Path(output_dir) / name / leaf
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def observer_dirs(run: Any) -> list[str]:
    """The folders of the run's sacred ``-F`` observers (empty for an unobserved rank)."""
    return [obs.dir for obs in getattr(run, "observers", []) if getattr(obs, "dir", None)]


def rank_callbacks(cfg: dict[str, Any], seed: int, run: Any, run_dir: Path, datamodule: AudioDataModule,
                   callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """What every command that builds a Trainer starts its ``callbacks`` with: rank 0's seeds and run
    folder for every rank (:func:`adopt_rank_zero` hands them to ``callbacks``, the command's whole
    list, when the process group is up) and the watch for dead ranks."""
    return [RankZeroDecides({"run": cfg["seed"], "steps": seed}, run_dir, observer_dirs(run),
                            lambda seeds, d: adopt_rank_zero(seeds, d, run_dir, datamodule, callbacks)),
            RankWatch(cfg["ddp"]["dead_rank_after_s"])]


def adopt_rank_zero(seeds: dict[str, int], run_dir: Path, own_run_dir: Path, datamodule: AudioDataModule,
                    callbacks: list[pl.Callback]) -> None:
    """Hand rank 0's seeds and run folder (:class:`RankZeroDecides`) to what this process built from its own.

    The run's seed: the training shuffle, the experiment's sampler and the clips' augmentations
    (the data module). The step seed (sacred's ``_seed`` of the command): the per-step and
    per-rank seeds. The run folder: the corrupt-clip log and the step checkpoints (Lightning's
    checkpoint callbacks take rank 0's folder by themselves).
    """
    datamodule.seed = seeds["run"]
    for callback in callbacks:
        if isinstance(callback, (PerRankSeed, StepSeeds)):
            callback.seed = seeds["steps"]
    if run_dir == own_run_dir:
        return
    os.environ[RUN_DIR_ENV] = str(run_dir)
    old_log, new_log = own_run_dir / CORRUPT_LOG_NAME, run_dir / CORRUPT_LOG_NAME
    for dataset in [datamodule.train_set] + [ds for ds, _ in datamodule.eval_sets]:
        if dataset is not None:
            attach_corrupt_log(dataset, new_log, replacing=old_log)
    moved = {StepCheckpoint: "path", NonFiniteGuard: "last_checkpoint"}  # where they write last.ckpt
    for callback in callbacks:
        attribute = moved.get(type(callback))
        value = getattr(callback, attribute) if attribute else None
        if isinstance(value, str) and Path(value).is_relative_to(own_run_dir):
            setattr(callback, attribute, str(run_dir / Path(value).relative_to(own_run_dir)))


def launch_plugins() -> list:
    """Trainer plugins that the launch route needs (``DDP=N`` inside a SLURM job: Lightning's own launcher)."""
    environment = cluster_environment()
    return [] if environment is None else [environment]


def warn_if_loaders_starve(trainer: pl.Trainer, cfg: dict[str, Any]) -> None:
    """Warn when the training loader's workers cannot decode as fast as a GPU trains."""
    if trainer.strategy.root_device.type != "cuda":
        return
    message = loader_supply_warning(cfg["datasets"]["training"].get("num_workers") or 0, cores_per_process())
    if message:
        rank_zero_warn(message)
def training_summary(run: Any, run_dir: Path, checkpointing: tuple[ModelCheckpoint, ...],
                     results: dict[str, float]) -> str:
    """The end of a training run on the console (:func:`helpers.experiment.report.summary`)."""
    best = checkpointing[0]
    score = float(best.best_model_score) if best.best_model_score is not None else None
    last = checkpointing[-1].best_model_path if len(checkpointing) > 1 else None
    metrics = {k: v for k, v in results.items() if not k.endswith("_examples")}
    return summary(run_dir, (best.best_model_path, best.monitor, score), last, metrics, sacred_run_folders(run))


def remove_empty_run_folder(cfg: dict[str, Any]) -> None:
    """After a failed training run: its folder goes when nothing was written into it (rank 0; not a resume)."""
    folder = os.environ.get(RUN_DIR_ENV)
    if folder and is_global_rank_zero() and not cfg.get("ckpt_path"):
        remove_if_empty(folder)


def with_checkpoint_networks(run: Any, cfg: dict[str, Any], evaluating: bool = False,
                             class_names: list[str] | None = None) -> dict[str, Any]:
    """``cfg`` with the network of the checkpoints it names (:mod:`helpers.experiment.checkpoint_network`);
    the keys taken from them go to sacred's ``info`` (``from_checkpoint``)."""
    cfg, taken = networks_from_checkpoints(cfg, evaluating, class_names)
    if taken:
        run.info["from_checkpoint"] = taken
    return cfg


def check_dataset(dataset: Dataset, task: Task, n_classes: int, split: str) -> None:
    """Fail before training when ``dataset`` is empty or its targets do not fit ``n_classes``."""
    if len(dataset) == 0:
        raise ValueError(f"The {split} set is empty; check the basedataset paths in the config.")
    target = torch.as_tensor(dataset[0][2])
    try:
        task.check_targets(target, n_classes)
    except ValueError as err:
        raise ValueError(
            f"The {split} set does not match the network: {err}. The network has models.net.n_classes="
            f"{n_classes} outputs; set `with models.net.n_classes=<number of classes>` (and the dataset's "
            f"n_classes, e.g. basedataset.n_classes) to the number of labels of the data.") from None


def loader_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """DataLoader arguments of ``datasets.<name>``; an evaluation loader takes what it does not set from ``datasets.test``."""
    return {**cfg["datasets"]["test"], **cfg["datasets"].get(name, {})}


def datamodule_for(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path, training: bool = True,
                   task: Task | None = None) -> tuple[AudioDataModule, str, int]:
    """The datasets (made now, so missing files and wrong targets fail before any training) and loaders.

    Returns the data module, the file that collects clips failing to decode, and how many lines it
    already holds (a resumed run's log keeps the failures of earlier attempts).
    """
    task = task or spec.get_task()
    n_classes = net_output_classes(cfg["models"])
    train_set = teacher_training_set(spec.train_set(), cfg, task) if training else None
    eval_sets = [(s.name, s.dataset(), loader_config(cfg, s.loader)) for s in spec.evaluation_sets()]
    for split, dataset in [("training", train_set)] + [(name, ds) for name, ds, _ in eval_sets]:
        if dataset is not None:
            check_dataset(dataset, task, n_classes, split)
    corrupt_log = os.fspath(run_dir / CORRUPT_LOG_NAME)
    for dataset in [ds for _, ds, _ in eval_sets] + [train_set]:
        if dataset is not None:
            corrupt_log = attach_corrupt_log(dataset, corrupt_log)
    dm = AudioDataModule(train_set, [(ds, loader) for _, ds, loader in eval_sets], cfg["datasets"]["training"],
                         train_sampler=spec.train_sampler, seed=cfg["seed"])
    return dm, corrupt_log, count_corrupt(corrupt_log)


def module_for(spec: ExperimentSpec, cfg: dict[str, Any], training: bool = True,
               task: Task | None = None) -> AudioModule:
    """The shared Lightning module with the configured network, front end, task and optimisation."""
    lr_lambda = get_lr_lambda(cfg["schedule_mode"], cfg["warm_up_len"], cfg["ramp_down_start"],
                              cfg["ramp_down_len"], cfg["last_lr_value"]) if training else None
    task = task or spec.get_task()
    module = AudioModule(
        build_net(cfg["models"]), build_mel(cfg["models"]["mel"]), task, lr_lambda=lr_lambda,
        lr=cfg["lr"], adamw=cfg["adamw"], weight_decay=cfg["weight_decay"],
        weight_decay_all=cfg["weight_decay_all"], mixup_alpha=cfg["mixup_alpha"] if cfg["use_mixup"] else None,
        swa=bool(cfg["swa"]) and training, log_spectrograms=cfg["log_spectrograms"] if training else 0,
        metadata={"experiment": spec.name, "models": cfg["models"], "activation": task.activation,
                  "class_names": spec.class_names() if spec.class_names else None,
                  # what a resume keeps (helpers/experiment/resume_config.py)
                  "seed": cfg.get("seed"), "batch_size": cfg["datasets"]["training"]["batch_size"]},
        eval_sets=tuple(s.name for s in spec.evaluation_sets()), distill=distillation_for(cfg, training),
    )
    if cfg["compile"]:
        module.net.compile()  # in place: parameter names (and checkpoint keys) stay net.*
    return module


def checkpoint_callbacks(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path,
                         task: Task | None = None) -> tuple[ModelCheckpoint, ...]:
    """The best checkpoint by the task's metric on the first evaluation set (``val_mAP`` for AudioSet,
    ``valid_mAP`` for FSD50K), and ``last.ckpt`` every epoch.

    ``last.ckpt`` has a callback of its own: Lightning's ``save_last`` only writes it in epochs
    that also wrote a best checkpoint, and a crash must not lose the epochs since then.
    """
    ckpt_cfg = dict(cfg["checkpointing"])
    task = task or spec.get_task()
    monitor = ckpt_cfg.pop("monitor", None) or f"{spec.evaluation_sets()[0].name}_{task.monitor}"
    mode = ckpt_cfg.pop("mode", None) or task.monitor_mode
    dirpath = ckpt_cfg.pop("dirpath", None) or str(run_dir / "checkpoints")
    filename = ckpt_cfg.pop("filename", None) or f"best-epoch{{epoch:03d}}-{monitor}-{{{monitor}:.4f}}"
    save_last = ckpt_cfg.pop("save_last", True)
    ckpt_cfg.pop("last_every_n_steps", None)  # see fault_tolerance_callbacks
    best = ModelCheckpoint(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode,
                           auto_insert_metric_name=False, **ckpt_cfg)
    if not save_last:
        return (best,)
    last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    return best, last


def fault_tolerance_callbacks(cfg: dict[str, Any], seed: int, datamodule: AudioDataModule,
                              checkpointing: tuple[ModelCheckpoint, ...]) -> list[pl.Callback]:
    """Exact resumes (position in the epoch, per-step seeds), the NaN/inf guard, and step checkpoints.

    In this order: the position is recorded before the guard may save a last good state in the
    same hook (step checkpoints come last anyway, as all checkpoint callbacks).
    """
    every_n_steps = cfg["checkpointing"].get("last_every_n_steps")
    last = os.path.join(checkpointing[0].dirpath, "last.ckpt") if len(checkpointing) > 1 else None
    callbacks: list[pl.Callback] = [
        TrainingPosition(datamodule.resume_point),
        StepSeeds(seed, per_rank=cfg["per_rank_seed"]),
        NonFiniteGuard(last, checkpoint_every=every_n_steps),
    ]
    if every_n_steps and last:
        callbacks.append(StepCheckpoint(last, every_n_steps))
    return callbacks


def wandb_logger(spec: ExperimentSpec, cfg: dict[str, Any], run_dir: Path, run: Any):
    """The WandbLogger of the ``wandb`` config; its files go to ``$WANDB_DIR`` or the run folder."""
    wandb_cfg = dict(cfg["wandb"])
    wandb_cfg["save_dir"] = wandb_cfg.get("save_dir") or os.environ.get("WANDB_DIR") or str(run_dir)
    wandb_cfg["name"] = wandb_cfg.get("name") or f"{spec.name}-{run_dir.name}"
    if is_global_rank_zero() and wandb_cfg.get("mode") != "disabled":
        Path(wandb_cfg["save_dir"]).mkdir(parents=True, exist_ok=True)
    logger = make_wandb_logger(wandb_cfg)
    logger.log_hyperparams({**cfg, "sacred_run_id": getattr(run, "_id", None), "run_dir": str(run_dir)})
    return logger


def record_run_info(run: Any, module: AudioModule, corrupt_log: str, before: int) -> None:
    """What every run stores in sacred's ``info``: network size, evaluated examples, clips that failed."""
    run.info.update({f"{name}_examples": n for name, n in module.last_eval_examples.items()})
    run.info.update(n_params=sum(p.numel() for p in module.net.parameters()), corrupt_log=corrupt_log,
                    corrupt_clips=count_corrupt(corrupt_log, before),
                    corrupt_clip_examples=corrupt_examples(corrupt_log, before))


def evaluation_results(spec: ExperimentSpec, metrics: dict[str, Any], module: AudioModule) -> dict[str, float]:
    """The metrics of every evaluation set (``val_*``, ``swa_val_*``, ...) as floats, and ``<set>_examples``."""
    prefixes = tuple(p for s in spec.evaluation_sets() for p in (f"{s.name}_", f"swa_{s.name}_"))
    results = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefixes)}
    results.update({f"{name}_examples": n for name, n in module.last_eval_examples.items()})
    return results


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}: {list(value[:3])}{'...' if len(value) > 3 else ''}"
    return repr(value)
