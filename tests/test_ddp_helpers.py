"""Rank detection, command-line preparation, CPU counting, the launch environment, and undoing
DistributedSampler sharding (the launch routes themselves: tests/test_scale_out.py)."""

import os

import pytest
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import DistributedSampler

from helpers.data.loaders import GPU_CLIPS_PER_S, default_num_workers, loader_supply_warning
from helpers.experiment import ddp
from helpers.experiment.ddp import (
    cgroup_cpu_limit,
    cluster_environment,
    cores_per_process,
    ddp_processes_from_env,
    is_global_rank_zero,
    prepare_argv,
    prepare_environment,
    processes_on_this_machine,
)
from helpers.training.gather import is_unshuffled_distributed_sampler, restore_padded_order

RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "DDP", "WORLD_SIZE",
             "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE",
             "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_STEP_NUM_TASKS", "SLURM_JOB_NAME")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)


def test_rank_zero_unless_some_rank_variable_is_non_zero(monkeypatch):
    assert is_global_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "0")
    assert is_global_rank_zero()
    monkeypatch.setenv("NODE_RANK", "1")  # local rank 0 of the second machine
    assert not is_global_rank_zero()


def test_non_zero_ranks_run_unobserved_and_nothing_else_changes(monkeypatch):
    argv = ["ex.py", "-F", "runs", "with", "lr=0.1"]
    assert prepare_argv(argv) == argv  # rank 0: untouched; the ranks agree on its seed later
    for var, value in (("LOCAL_RANK", "1"), ("RANK", "3"), ("SLURM_PROCID", "2"), ("NODE_RANK", "1")):
        monkeypatch.setenv(var, value)
        assert prepare_argv(argv) == argv + ["--unobserved"]
        monkeypatch.delenv(var)


def test_a_process_of_the_second_machine_is_not_rank_zero_for_lightning_either(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    monkeypatch.setenv("NODE_RANK", "1")  # what Lightning's rank-zero utilities do not read
    prepare_environment()
    assert rank_zero_only.rank != 0  # so it logs no hyperparameters to a wandb run of its own
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"  # a failed collective ends the process


def test_ddp_variable_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv("DDP", "two")
    with pytest.raises(ValueError, match="number of processes"):
        ddp_processes_from_env()


@pytest.mark.parametrize(("n", "world"), [(7, 2), (8, 2), (10, 3), (5, 4)])
def test_restore_padded_order_recovers_each_example_once(n, world):
    dataset = list(range(n))
    shards = [list(DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    gathered = torch.tensor(shards)  # what all_gather returns: [world, n_per_rank]
    assert restore_padded_order(gathered, n).tolist() == dataset
    # with a feature axis too
    assert restore_padded_order(gathered[..., None].expand(-1, -1, 3), n)[:, 0].tolist() == dataset


def test_only_unshuffled_padded_distributed_samplers_qualify():
    data = list(range(5))
    assert is_unshuffled_distributed_sampler(DistributedSampler(data, num_replicas=2, rank=0, shuffle=False))
    assert not is_unshuffled_distributed_sampler(DistributedSampler(data, num_replicas=2, rank=0, shuffle=True))
    assert not is_unshuffled_distributed_sampler(None)


def test_workers_come_from_the_cores_of_each_process_on_the_machine(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(ddp, "cgroup_cpu_limit", lambda: None)
    assert processes_on_this_machine() == 1 and cores_per_process() == 64
    assert default_num_workers(cores_per_process()) == 16  # the original's count is the ceiling
    monkeypatch.setenv("DDP", "8")  # 8 GPUs on a 64-core node: 8 cores each, 7 decode, 1 trains
    assert processes_on_this_machine() == 8 and default_num_workers(cores_per_process()) == 7
    monkeypatch.delenv("DDP")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun
    assert cores_per_process() == 16
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(ddp, "cgroup_cpu_limit", lambda: 6.0)  # a container's CPU quota
    assert cores_per_process() == 6
    assert default_num_workers(1) == default_num_workers(2) == 1  # at least one: loading never blocks training


def test_slurm_tasks_count_the_cpus_they_are_bound_to_once(monkeypatch):
    monkeypatch.setattr(ddp, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "64")
    # srun bound each task to its 16 CPUs: they are this task's alone, not divided again by 4
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert processes_on_this_machine() == 4 and cores_per_process() == 16
    # SLURM's default of one CPU per task: one worker, and a warning on a GPU saying what to ask for
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {5}, raising=False)
    assert cores_per_process() == 1 and default_num_workers(cores_per_process()) == 1
    warning = loader_supply_warning(1, cores_per_process())
    assert "--cpus-per-task=5" in warning and "may use 1 CPU" in warning
    # tasks that are not bound see all CPUs of the job: shared by the tasks, capped by --cpus-per-task
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert cores_per_process() == 16
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert cores_per_process() == 6 and default_num_workers(6) == 5
    assert loader_supply_warning(5, 6) is None  # 5 workers decode ~1375 clips/s, more than a GPU trains
    assert 5 * 275 >= GPU_CLIPS_PER_S


def test_cgroup_cpu_quota_is_read_from_cpu_max(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere") is None


def test_ddp_inside_a_slurm_batch_script_launches_its_own_processes(monkeypatch):
    monkeypatch.setenv("DDP", "2")
    assert cluster_environment() is None  # outside SLURM: Lightning's choice is right
    for var, value in (("SLURM_JOB_ID", "1234"), ("SLURM_NTASKS", "1"), ("SLURM_NTASKS_PER_NODE", "1"),
                       ("SLURM_JOB_NAME", "passt"), ("SLURM_PROCID", "0")):
        monkeypatch.setenv(var, value)
    assert isinstance(cluster_environment(), LightningEnvironment)  # the batch script, no srun
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert isinstance(cluster_environment(), LightningEnvironment)  # srun --ntasks=1
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    with pytest.raises(RuntimeError, match="DDP=2 inside an srun step of 4 tasks.*trainer.devices=<GPUs>"):
        cluster_environment()
    monkeypatch.delenv("DDP")
    assert cluster_environment() is None  # srun started the processes: Lightning's SLURM environment
