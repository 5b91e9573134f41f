"""Rank detection, command-line preparation for DDP children, and undoing DistributedSampler sharding."""

import pytest
import torch
from torch.utils.data import DistributedSampler

from helpers.data.loaders import default_num_workers
from helpers.experiment.ddp import (
    cores_per_process,
    ddp_processes_from_env,
    is_global_rank_zero,
    prepare_argv,
    processes_on_this_machine,
    shared_seed_from_env,
)
from helpers.training.gather import is_unshuffled_distributed_sampler, restore_padded_order

RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "DDP", "WORLD_SIZE",
             "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE",
             "SLURM_CPUS_PER_TASK")


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


def test_non_zero_ranks_run_unobserved(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("DDP", "2")
    argv = prepare_argv(["ex.py", "-F", "runs", "with", "seed=3", "lr=0.1"])
    assert argv == ["ex.py", "-F", "runs", "with", "seed=3", "lr=0.1", "--unobserved"]


def test_rank_zero_pins_a_seed_for_the_ddp_children(monkeypatch):
    monkeypatch.setenv("DDP", "2")
    argv = prepare_argv(["ex.py", "main", "with", "lr=0.1", "-F", "runs"])
    assert argv[:3] == ["ex.py", "main", "with"] and argv[3].startswith("seed=") and argv[4:] == ["lr=0.1", "-F", "runs"]
    assert prepare_argv(["ex.py"])[1:2] == ["with"]
    explicit = ["ex.py", "with", "seed=7"]
    assert prepare_argv(explicit) == explicit  # an explicit seed is kept


def test_single_process_command_line_is_untouched():
    assert prepare_argv(["ex.py", "print_config"]) == ["ex.py", "print_config"]


def test_torchrun_ranks_share_a_seed_from_the_job_id(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-42")
    seed = shared_seed_from_env()
    assert prepare_argv(["ex.py"]) == ["ex.py", "with", f"seed={seed}"]
    monkeypatch.setenv("RANK", "3")
    assert shared_seed_from_env() == seed


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
    assert processes_on_this_machine() == 1 and cores_per_process() == 64
    assert default_num_workers(cores_per_process()) == 16  # the original's count is the ceiling
    monkeypatch.setenv("DDP", "8")  # 8 GPUs on a 64-core node: 8 cores each, 7 decode, 1 trains
    assert processes_on_this_machine() == 8 and default_num_workers(cores_per_process()) == 7
    monkeypatch.delenv("DDP")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun
    assert cores_per_process() == 16
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert processes_on_this_machine() == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")  # already per task
    assert cores_per_process() == 6 and default_num_workers(6) == 5
    assert default_num_workers(1) == default_num_workers(2) == 1  # at least one: loading never blocks training
