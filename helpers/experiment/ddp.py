"""Several processes: who is rank 0, how the ranks re-run the command line, and their seeds.

How ``DDP=N python ex_audioset.py ...`` works: the config sets ``trainer.devices=N`` and
``trainer.strategy="ddp"``; Lightning's DDP launcher re-runs ``sys.argv`` in N-1 child processes
(``LOCAL_RANK=1..N-1``) when ``trainer.fit``/``validate`` starts. :func:`prepare_argv` runs before
sacred parses the command line, in every process:

* rank 0 pins the seed in ``sys.argv`` (``with seed=...``) before the children are launched, so
  every rank builds the same config;
* every other rank adds sacred's ``--unobserved``, so only rank 0 writes sacred runs (``-F``,
  ``-m``); Lightning's loggers (wandb, the sacred metrics logger) log on rank 0 only.

Under torchrun or SLURM every process is started externally with the same command line; the
rank comes from ``RANK``/``SLURM_PROCID`` and, without an explicit ``seed=``, the seed is derived
from the job id that all processes share.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import subprocess
from collections.abc import Sequence

import pytorch_lightning as pl

_logger = logging.getLogger(__name__)

#: environment variables that carry a (global, local or node) rank; any non-zero one means "not rank 0"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def ddp_processes_from_env() -> int:
    """The ``DDP`` environment variable: processes to train with on this machine (0 when unset)."""
    value = os.environ.get("DDP", "").strip()
    if not value:
        return 0
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"DDP={value!r}: set DDP to the number of processes, e.g. `DDP=2 python "
                         f"ex_audioset.py`") from None
    if n < 1:
        raise ValueError(f"DDP={n}: the number of processes must be >= 1")
    return n


def processes_on_this_machine() -> int:
    """Training processes that share this machine: ``DDP=N``, torchrun's ``LOCAL_WORLD_SIZE``,
    SLURM's ``SLURM_NTASKS_PER_NODE`` (e.g. ``4`` or ``4(x2)``), else 1."""
    ddp = ddp_processes_from_env()
    if ddp:
        return ddp
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        count = re.match(r"\d+", os.environ.get(var, "").strip())
        if count and int(count.group()) > 0:
            return int(count.group())
    return 1


def cores_per_process() -> int:
    """CPU cores for each training process on this machine.

    SLURM's ``SLURM_CPUS_PER_TASK`` is already per process; otherwise the cores this process may
    run on (its affinity mask, which respects cgroups and ``taskset``) shared by the processes of
    :func:`processes_on_this_machine`.
    """
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if per_task.isdigit() and int(per_task) > 0:
        return int(per_task)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes_on_this_machine())


def is_global_rank_zero() -> bool:
    """True unless an environment variable says this process has a non-zero rank."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var, "").strip()
        if value and value != "0":
            return False
    return True


def externally_launched_world_size() -> int:
    """World size of torchrun/SLURM launches (1 when started as a plain process)."""
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def shared_job_id() -> str | None:
    """An id all processes of one torchrun/SLURM job share (None outside such jobs)."""
    for var in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        value = os.environ.get(var, "").strip()
        if value and value != "none":
            return value
    return None


def shared_seed_from_env() -> int | None:
    """A seed all processes of one torchrun/SLURM job agree on, or None outside such jobs."""
    job = shared_job_id()
    return None if job is None else int(hashlib.sha256(job.encode()).hexdigest(), 16) % (2**31)


def _has_seed_update(argv: Sequence[str]) -> bool:
    if "with" not in argv:
        return False
    return any(arg.startswith("seed=") for arg in argv[argv.index("with") + 1:])


def _with_seed(argv: list[str], seed: int) -> list[str]:
    if "with" in argv:
        i = argv.index("with") + 1
        return argv[:i] + [f"seed={seed}"] + argv[i:]
    return argv + ["with", f"seed={seed}"]


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """The command line for this process (see the module docstring); ``argv[0]`` is the script."""
    argv = list(argv)
    if not is_global_rank_zero():
        return argv + ["--unobserved"] if "--unobserved" not in argv and "-u" not in argv else argv
    if _has_seed_update(argv):
        return argv
    if ddp_processes_from_env() > 1:
        # the children re-run sys.argv: the seed must be in it before they are launched
        return _with_seed(argv, random.SystemRandom().randrange(2**31))
    if externally_launched_world_size() > 1:
        seed = shared_seed_from_env()
        if seed is not None:
            return _with_seed(argv, seed)
        _logger.warning("Several processes without a shared job id: pass `with seed=N` so that all "
                        "ranks use the same seed.")
    return argv


def wait_for_child_processes(trainer, timeout: float = 600.0) -> None:
    """Let rank 0 return only after the DDP children it launched have exited."""
    launcher = getattr(trainer.strategy, "launcher", None)
    for proc in getattr(launcher, "procs", None) or []:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _logger.warning("DDP child process %s still running after %.0f s", proc.pid, timeout)


class PerRankSeed(pl.Callback):
    """Re-seeds each DDP rank with ``seed + global_rank`` once the ranks are known.

    All ranks start from the same seed (same config, same initial weights, which DDP broadcasts
    anyway); afterwards mixup, patchout and SpecAugment should differ between ranks, or every
    rank would apply the same random draws to its share of the batch.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            pl.seed_everything((self.seed + trainer.global_rank) % 2**32, workers=True, verbose=False)
