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

When a rank dies (:func:`supervise_ranks`, :func:`wait_for_child_processes`), the others stop
within a bounded time instead of waiting in a collective until its timeout (30 minutes):

* a child that dies: rank 0's collectives fail at once with gloo, and it stops with an error
  naming the rank; Lightning's observer of the children, which would kill rank 0 within 5 s
  before it could record anything, is replaced by one that gives rank 0 :data:`FAILURE_GRACE_S`
  seconds to stop by itself and kills it only when it hangs (NCCL can), after marking its sacred
  run failed;
* rank 0 that dies: each child sees its parent gone within :data:`POLL_S` seconds, marks the
  sacred run failed (``-F`` observers; rank 0 can no longer) and exits;
* rank 0 that fails with an error: it kills the children (they cannot finish without it).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.strategies.launchers import subprocess_script

from helpers.data.atomic import atomic_write

_logger = logging.getLogger(__name__)

#: seconds between looks at the other processes of a DDP=N run
POLL_S = 1.0
#: seconds rank 0 has to stop by itself after a child died, before it is killed
FAILURE_GRACE_S = 30.0
#: seconds a survivor waits for a process it lost to be reported gone by the system
LOST_RANK_WAIT_S = 2.0
#: environment variables rank 0 leaves for the children it launches
PARENT_PID_ENV = "PASST_DDP_PARENT_PID"
SACRED_RUN_DIRS_ENV = "PASST_SACRED_RUN_DIRS"

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


def _children(trainer) -> list[subprocess.Popen]:
    return list(getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or [])


def exit_description(returncode: int) -> str:
    """``"was killed by SIGKILL"`` / ``"exited with code 1"`` for a process' return code."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def lost_ranks(trainer) -> str | None:
    """The other DDP processes of this run that died, in words (None: none), for the error of a survivor.

    On rank 0: the children it launched that ended with an error. On such a child: rank 0, if it
    is gone; its sacred run is then marked failed here, since rank 0 could not do it.
    """
    # a killed process closes its sockets (the survivor's collective fails) a moment before it is
    # reaped (its parent sees it end; its children see a new parent): wait a little for that
    deadline = time.monotonic() + LOST_RANK_WAIT_S
    parent = os.environ.get(PARENT_PID_ENV)
    if not is_global_rank_zero():
        if not parent:
            return None
        while os.getppid() == int(parent) and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.getppid() == int(parent):
            return None
        message = f"DDP rank 0 (pid {parent}) is gone (killed?)"
        mark_runs_failed(_sacred_run_dirs(), message)
        return message
    dead = []
    for rank, proc in enumerate(_children(trainer), start=1):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode:
            dead.append(f"DDP rank {rank} (pid {proc.pid}) {exit_description(proc.returncode)}")
    return "; ".join(dead) or None


def wait_for_child_processes(trainer, failed: bool = False, timeout: float = 600.0) -> None:
    """Let rank 0 return only after the DDP children it launched have exited.

    ``failed``: this rank stopped with an error, so the children cannot finish (they would wait
    for it in a collective until its timeout): they are killed.
    """
    for proc in _children(trainer):
        if failed and proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _logger.warning("DDP child process %s still running after %.0f s", proc.pid, timeout)


def mark_runs_failed(run_dirs: Sequence[str], reason: str) -> None:
    """Mark the sacred runs in these ``-F`` observer folders failed, unless they already ended.

    For a process that ended without telling sacred (killed), written by one that survived it.
    """
    for folder in run_dirs:
        path = Path(folder) / "run.json"
        try:
            record = json.loads(path.read_text())
            if record.get("status") != "RUNNING":
                continue
            record.update(status="FAILED", stop_time=datetime.datetime.utcnow().isoformat(), fail_trace=[reason])
            with atomic_write(path) as f:
                f.write(json.dumps(record, indent=2, sort_keys=True).encode())
        except (OSError, ValueError) as err:
            _logger.error("could not mark the sacred run in %s failed: %s", folder, err)


class _PatientChildObserver(subprocess_script._ChildProcessObserver):
    """Lightning's observer of the DDP children, giving rank 0 time to stop by itself (module docstring)."""

    def __init__(self, main_pid: int, child_processes: list[subprocess.Popen], sleep_period: float = POLL_S) -> None:
        super().__init__(main_pid=main_pid, child_processes=child_processes, sleep_period=sleep_period)

    def _run(self) -> bool:
        codes = [proc.poll() for proc in self._child_processes]
        if all(code == 0 for code in codes):
            return True
        failed = [(rank, proc) for rank, proc in enumerate(self._child_processes, start=1) if proc.returncode]
        if not failed:
            return False
        rank, proc = failed[0]
        message = f"DDP rank {rank} (pid {proc.pid}) {exit_description(proc.returncode)}"
        _logger.error("%s; rank 0 stops too", message)
        time.sleep(FAILURE_GRACE_S)  # a daemon thread: it ends with rank 0 if rank 0 exits meanwhile
        message += f"; rank 0 did not stop within {FAILURE_GRACE_S:.0f} s (hung in a collective) and was killed"
        _logger.error(message)
        mark_runs_failed(_sacred_run_dirs(), message)
        self._terminate_all()
        return True


def _sacred_run_dirs() -> list[str]:
    return [d for d in os.environ.get(SACRED_RUN_DIRS_ENV, "").split(os.pathsep) if d]


def _watch_parent(parent_pid: int, run_dirs: list[str], rank: str) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    message = f"DDP rank 0 (pid {parent_pid}) is gone (killed?); rank {rank} stops"
    print(message, file=sys.stderr, flush=True)
    mark_runs_failed(run_dirs, message)
    os._exit(1)  # the main thread may be stuck in a collective that waits for rank 0


def supervise_ranks(sacred_run_dirs: Sequence[str] = ()) -> None:
    """Make the processes of a ``DDP=N`` run stop together when one dies (module docstring).

    Called by every process before training. Rank 0 leaves its pid and its sacred ``-F`` run
    folders to the children it is about to launch, and installs the patient observer; a child
    launched by rank 0 starts a thread that ends it when rank 0 is gone.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if is_global_rank_zero():
        if ddp_processes_from_env() > 1:
            os.environ[PARENT_PID_ENV] = str(os.getpid())
            os.environ[SACRED_RUN_DIRS_ENV] = os.pathsep.join(sacred_run_dirs)
            subprocess_script._ChildProcessObserver = _PatientChildObserver
    elif parent and os.environ.get("LOCAL_RANK", "0") != "0":  # launched by rank 0 (it may be gone already)
        threading.Thread(target=_watch_parent, args=(int(parent), _sacred_run_dirs(), os.environ["LOCAL_RANK"]),
                         name="ddp-parent-watch", daemon=True).start()


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
