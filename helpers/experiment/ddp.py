"""Several processes: who is rank 0, what every rank takes from it, and stopping together.

The launch routes (README, "Several GPUs" and "Several machines"):

* ``DDP=N python ex_audioset.py ...`` and ``trainer.devices=N``: Lightning re-runs ``sys.argv``
  in N-1 child processes (``LOCAL_RANK=1..N-1``) when ``trainer.fit``/``validate`` starts; with
  ``trainer.num_nodes=M`` the same command runs on every machine with ``NODE_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT`` set;
* ``torchrun`` (``RANK``, ``LOCAL_RANK``, with or without ``--rdzv-id``) and SLURM's ``srun``
  (``SLURM_PROCID``) start every process themselves, all with the same command line.

Whatever the route, the processes start with their own sacred config (each draws its own seed
when the command line gives none). :class:`RankZeroDecides` makes them agree once the process
group is up, with one broadcast: every rank takes rank 0's seeds (the run's ``seed``: clip order,
samplers, per-clip augmentations; sacred's ``_seed`` derived from it: per-step draws), rank 0's
run folder and rank 0's sacred run folders. Before that,
:func:`prepare_argv` gives every process that is not global rank 0 sacred's ``--unobserved``
(only rank 0 writes a sacred run) and :func:`prepare_environment` tells Lightning's rank-zero
utilities (wandb) which process is not rank 0 before any rank is known.

When a rank dies, the others stop within seconds instead of waiting in a collective until its
timeout (``ddp.timeout_s``): :mod:`helpers.experiment.rank_watch` on every route; for the
processes of a ``DDP=N`` run, also:

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

import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import LightningEnvironment
from lightning_fabric.strategies.launchers import subprocess_script
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from helpers.experiment.rank_watch import SACRED_RUN_DIRS_ENV, RankWatch, mark_runs_failed, sacred_run_dirs

_logger = logging.getLogger(__name__)

#: seconds between looks at the other processes of a DDP=N run
POLL_S = 1.0
#: seconds rank 0 has to stop by itself after a child died, before it is killed
FAILURE_GRACE_S = 30.0
#: seconds a survivor waits for a process it lost to be reported gone by the system
LOST_RANK_WAIT_S = 2.0
#: environment variables rank 0 leaves for the children it launches
PARENT_PID_ENV = "PASST_DDP_PARENT_PID"

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


def _count_env(var: str) -> int:
    """The leading number of ``var`` (``4`` of SLURM's ``4(x2)``), 0 when unset or not a number."""
    count = re.match(r"\d+", os.environ.get(var, "").strip())
    return int(count.group()) if count else 0


def processes_on_this_machine() -> int:
    """Training processes that share this machine: ``DDP=N``, torchrun's ``LOCAL_WORLD_SIZE``,
    SLURM's ``SLURM_NTASKS_PER_NODE`` (e.g. ``4`` or ``4(x2)``), else 1."""
    ddp = ddp_processes_from_env()
    if ddp:
        return ddp
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if _count_env(var) > 0:
            return _count_env(var)
    return 1


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup's quota allows (``cpu.max``: quota / period; v1: ``cpu.cfs_quota_us``), None: no quota."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process can really use: its affinity mask (cgroups' cpusets, ``taskset``, SLURM's
    task binding), capped by a cgroup CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit)) if limit else cpus)


def cores_per_process() -> int:
    """CPU cores for each training process on this machine.

    The CPUs this process can use (:func:`usable_cpus`), shared by the training processes that can
    use the same ones: under SLURM, a task bound to its own CPUs (fewer than the job has on the
    node, ``SLURM_CPUS_ON_NODE``) shares them with nobody, and ``SLURM_CPUS_PER_TASK`` caps what a
    task takes; otherwise the processes of :func:`processes_on_this_machine` share the mask
    (``DDP=N`` and torchrun start theirs on the same CPUs).
    """
    usable = usable_cpus()
    per_task = _count_env("SLURM_CPUS_PER_TASK")
    on_node = _count_env("SLURM_CPUS_ON_NODE")
    if not ddp_processes_from_env() and on_node and usable < on_node:
        return max(1, min(usable, per_task) if per_task else usable)  # srun bound this task to its CPUs
    if per_task and not ddp_processes_from_env():
        return max(1, min(usable, per_task))
    return max(1, usable // processes_on_this_machine())


def is_global_rank_zero() -> bool:
    """True unless an environment variable says this process has a non-zero rank."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var, "").strip()
        if value and value != "0":
            return False
    return True


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """The command line for this process: every rank but global rank 0 runs ``--unobserved``.

    ``argv[0]`` is the script. The seed is not pinned here: the ranks agree on rank 0's once
    the process group is up (:class:`RankZeroDecides`), whatever launched them.
    """
    argv = list(argv)
    if not is_global_rank_zero() and "--unobserved" not in argv and "-u" not in argv:
        return argv + ["--unobserved"]
    return argv


def prepare_environment() -> None:
    """Process-wide settings every command needs before Lightning or torch.distributed start.

    * Lightning's rank-zero utilities read the rank from ``RANK``/``LOCAL_RANK``/``SLURM_PROCID``
      at import; a process started with ``NODE_RANK=1`` alone (the first process of the second
      machine of a ``DDP=N`` run) would count as rank 0 until the Trainer knows better, and log
      the hyperparameters to a wandb run of its own.
    * NCCL: a failed or timed-out collective aborts the communicator and ends the process (instead
      of PyTorch's default of ending it without the abort), unless the environment says otherwise.
    """
    if not is_global_rank_zero():
        rank_zero_only.rank = max(1, getattr(rank_zero_only, "rank", 0) or 0)
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")


def _slurm_step_tasks() -> int:
    """Tasks ``srun`` started in this job step (0 outside an ``srun`` step, e.g. in the batch script)."""
    return _count_env("SLURM_STEP_NUM_TASKS")


def cluster_environment() -> LightningEnvironment | None:
    """The cluster environment for the Trainer when Lightning's own choice would be wrong (else None).

    ``DDP=N`` inside a SLURM allocation: Lightning sees ``SLURM_NTASKS`` and assumes ``srun``
    started every process itself, so it launches none (and fails on ``--ntasks-per-node``, or
    waits for ranks that never come). When this process is the only task (the batch script
    itself, or ``srun`` with one task), the processes are ours to start: Lightning's own
    environment launches them on this machine. Several ``srun`` tasks and ``DDP=N`` would start
    N processes per task: an error says which of the two to keep.
    """
    ddp = ddp_processes_from_env()
    if ddp <= 1 or "SLURM_NTASKS" not in os.environ:
        return None
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None  # Lightning ignores SLURM in interactive jobs anyway
    if _slurm_step_tasks() > 1:
        raise RuntimeError(
            f"DDP={ddp} inside an srun step of {_slurm_step_tasks()} tasks would start {ddp} processes per task. "
            f"Either let srun start one task per GPU (#SBATCH --ntasks-per-node=<GPUs>, `srun python ex_audioset.py "
            f"... trainer.devices=<GPUs> trainer.strategy=ddp`, without DDP), or run `DDP={ddp} python ex_audioset.py "
            f"...` in the batch script without srun (or with `srun --ntasks=1`).")
    return LightningEnvironment()


class RankZeroDecides(pl.Callback):
    """Every rank takes rank 0's seeds, run folder and sacred run folders, once the process group is up.

    One broadcast in ``setup`` (before any loader, sampler or training step exists); then
    ``adopt(seeds, run_dir)`` hands them to whatever the run built from this process' own values.
    Non-zero ranks remember rank 0's sacred ``-F`` folders (:data:`SACRED_RUN_DIRS_ENV`), so that
    a survivor can mark rank 0's run failed when rank 0 dies.

    Args:
        seeds: this process' seeds by name (the run's ``seed`` and what derives from it); the
            process is seeded with ``seeds["steps"]`` once they are rank 0's.
        run_dir: this process' run folder.
        sacred_run_dirs: the ``-F`` folders of this process' sacred run (empty unless observed).
        adopt: called on every rank with rank 0's seeds and run folder.
    """

    def __init__(self, seeds: dict[str, int], run_dir: str | os.PathLike, sacred_run_dirs: Sequence[str],
                 adopt: Callable[[dict[str, int], Path], None]) -> None:
        self.seeds, self.run_dir, self.sacred_run_dirs = dict(seeds), Path(run_dir), list(sacred_run_dirs)
        self.adopt = adopt

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        seeds, run_dir, run_dirs = trainer.strategy.broadcast(
            (self.seeds, str(self.run_dir), self.sacred_run_dirs), src=0)
        if seeds != self.seeds:
            _logger.info("rank %d takes rank 0's seeds %s (its own were %s)", trainer.global_rank, seeds, self.seeds)
        self.seeds, self.run_dir, self.sacred_run_dirs = dict(seeds), Path(run_dir), list(run_dirs)
        if run_dirs:
            os.environ[SACRED_RUN_DIRS_ENV] = os.pathsep.join(run_dirs)
        pl.seed_everything(self.seeds["steps"], workers=True, verbose=False)
        self.adopt(self.seeds, self.run_dir)


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
    """The other processes of this run that died, in words (None: none), for the error of a survivor.

    What the rank watch found (:class:`~helpers.experiment.rank_watch.RankWatch`, every route);
    on rank 0 of a ``DDP=N`` run, also the children it launched that ended with an error; on such
    a child, rank 0 if it is gone (its sacred run is then marked failed here, since rank 0 could
    not do it).
    """
    watched = next((cb.reason for cb in getattr(trainer, "callbacks", []) if isinstance(cb, RankWatch) and cb.reason), None)
    # a killed process closes its sockets (the survivor's collective fails) a moment before it is
    # reaped (its parent sees it end; its children see a new parent): wait a little for that
    deadline = time.monotonic() + LOST_RANK_WAIT_S
    parent = os.environ.get(PARENT_PID_ENV)
    if not is_global_rank_zero():
        if not parent or os.environ.get("LOCAL_RANK", "0") == "0":
            return watched
        while os.getppid() == int(parent) and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.getppid() == int(parent):
            return watched
        message = f"DDP rank 0 (pid {parent}) is gone (killed?)"
        mark_runs_failed(sacred_run_dirs(), message)
        return message
    dead = []
    for rank, proc in enumerate(_children(trainer), start=1):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode:
            dead.append(f"DDP rank {rank} (pid {proc.pid}) {exit_description(proc.returncode)}")
    return "; ".join(dead) or watched


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
        mark_runs_failed(sacred_run_dirs(), message)
        self._terminate_all()
        return True


def _watch_parent(parent_pid: int, run_dirs: list[str], rank: str) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    message = f"DDP rank 0 (pid {parent_pid}) is gone (killed?); rank {rank} stops"
    print(message, file=sys.stderr, flush=True)
    mark_runs_failed(run_dirs, message)
    os._exit(1)  # the main thread may be stuck in a collective that waits for rank 0


def launches_children(trainer) -> bool:
    """Whether this process starts the other processes of its machine itself (``DDP=N``,
    ``trainer.devices=N``: Lightning re-runs the command line), rather than torchrun or srun."""
    launcher = getattr(trainer.strategy, "launcher", None)
    return (isinstance(launcher, subprocess_script._SubprocessScriptLauncher)
            and not launcher.cluster_environment.creates_processes_externally and launcher.num_processes > 1)


def supervise_ranks(trainer=None, run_dirs: Sequence[str] = ()) -> None:
    """Make the processes a ``DDP=N`` (or ``trainer.devices=N``) run starts stop together when one dies.

    Called by every process before training (module docstring), with its Trainer. A process that
    launches the others of its machine leaves them its pid and its sacred ``-F`` run folders, and
    installs the patient observer; a child it launched starts a thread that ends it when its
    parent is gone.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if trainer is not None and launches_children(trainer) and os.environ.get("LOCAL_RANK", "0") == "0":
        os.environ[PARENT_PID_ENV] = str(os.getpid())
        os.environ[SACRED_RUN_DIRS_ENV] = os.pathsep.join(run_dirs)
        subprocess_script._ChildProcessObserver = _PatientChildObserver
    elif parent and os.environ.get("LOCAL_RANK", "0") != "0":  # launched by rank 0 (it may be gone already)
        threading.Thread(target=_watch_parent, args=(int(parent), sacred_run_dirs(), os.environ["LOCAL_RANK"]),
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
