"""Every launch route trains on the data one process would, once, and survives a lost rank (real processes, gloo).

Routes, each with two processes of the real command line (``tests/ddp_route.py`` runs
``ex_audioset.py`` and records what every rank trains, see there), exactly as the README's
"Several GPUs" and "Several machines" sections give them, on this machine:

* ``DDP=2`` inside a SLURM batch script without ``srun`` (SLURM's batch variables set);
* ``trainer.devices=2``;
* ``torchrun --nnodes 2 --nproc-per-node 1``, two torchrun processes as node 0 and node 1, with
  and without ``--rdzv-id``;
* two processes with the variables ``srun`` sets for 2 nodes of one task each.

Every rank but rank 0 starts with a seed of its own (as when the command line gives none); the
run must use rank 0's (3). ``DDP=2`` trains uninterrupted and is the reference. Every other route
loses a rank after the mid-epoch checkpoint of step 3 (SIGKILL of rank 0 or 1, or SIGTERM to
rank 1 alone), then resumes from it. Asserted per route: every process ends within seconds and
the sacred run is FAILED, never left RUNNING; each rank's clips, epoch by epoch, are its share
of the one-process draw of seed 3 (disjoint, together that draw); one run folder, one sacred run
per launch and, on the routes that log to wandb (``DDP=2``, ``srun``), one wandb run per launch;
identical weights on every rank, bit for bit those of the uninterrupted reference (an exact
resume on every route).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from experiment_cli import ROOT, copy_hdf5, data_args, sacred_run

from audioset.dataset import build_weighted_sampler
from helpers.data.hdf5_dataset import decode_name, open_read_only

pytestmark = pytest.mark.slow

DRIVER = str(ROOT / "tests" / "ddp_route.py")
SEED = 3
#: seconds within which every process of a route must end after a rank is lost (a loaded 2-core machine)
ENDS_WITHIN_S = 30
#: routes whose launches log to (offline) wandb: one run each, rank 0's
WANDB_ROUTES = ("DDP=2 in sbatch", "srun")
#: variables of the launch routes, never inherited from the environment running the tests
LAUNCH_VARS = ("DDP", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID", "PASST_RUN_DIR", "PASST_DDP_PARENT_PID", "PASST_SACRED_RUN_DIRS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(record: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PASST_TEST_RECORD": str(record), "PASST_TEST_OWN_SEED": "1", **more}


def args(mini: dict, out: Path, sacred: Path, *more: str) -> list[str]:
    # 16 clips per epoch, 4 per batch, 2 ranks: 2 steps per epoch and rank; a step checkpoint after every step;
    # 7 evaluation clips: the evaluation sampler pads them to 8 for 2 ranks
    eval7 = copy_hdf5(mini["eval_hdf5"], out.parent / "eval7.hdf", rows=7)
    return ["-F", str(sacred), "with", "mini_train", "tiny_model",
            *data_args(mini, epoch_len=16, wavmix=False, eval_hdf5=eval7),
            "trainer.limit_train_batches=None", "checkpointing.last_every_n_steps=1", f"output_dir={out}",
            "models.net.grad_checkpointing=True",  # the recomputing backward passes through DDP's gradient hooks
            f"seed={SEED}", *more]


def slurm_env(rank: int, port: int) -> dict[str, str]:
    """What ``srun`` sets for task ``rank`` of a job of 2 nodes with one task each (Lightning takes the
    port from the job id's last 4 digits + 15000)."""
    return {"SLURM_JOB_ID": f"77{port - 15000:04d}", "SLURM_JOB_NAME": "passt", "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_NODELIST": "127.0.0.1",
            "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank),
            "SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "1"}


def slurm_port() -> int:
    """A free port that a SLURM job id can give (15000-24999)."""
    for port in random.sample(range(15000, 25000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 15000-24999")


def launch(route: str, mini: dict, tmp: Path, port: int = 0, resume: Path | None = None, stop: str | None = None
           ) -> list[subprocess.Popen]:
    """Start one launch of ``route``; returns the processes the test started (launchers included).

    ``port``: torchrun's rendezvous port, or the one SLURM's job id gives.
    """
    record, out, sacred = tmp / "record", tmp / "out", tmp / "sacred"
    more = [f"ckpt_path={resume}"] if resume else []
    if route not in WANDB_ROUTES:
        more.append("wandb.mode=disabled")  # a wandb run costs seconds; counted on the routes that keep it
    env = base_env(record, **({"PASST_TEST_STOP": stop} if stop else {}))
    cmd = [sys.executable, DRIVER, *args(mini, out, sacred, *more)]
    popen = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if route == "DDP=2 in sbatch":
        batch = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "passt", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
                 "SLURM_NNODES": "1", "SLURM_NODELIST": "127.0.0.1", "SLURM_PROCID": "0", "SLURM_CPUS_ON_NODE": "2"}
        return [subprocess.Popen(cmd, env={**env, **batch, "DDP": "2"}, **popen)]
    if route == "trainer.devices=2":
        return [subprocess.Popen(cmd + ["trainer.devices=2"], env=env, **popen)]
    nodes = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp"]
    if route.startswith("torchrun"):
        torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        if route == "torchrun --rdzv-id":
            torchrun += ["--rdzv-id", "passt-test"]
        return [subprocess.Popen(torchrun + cmd[1:] + nodes, env=env, **popen) for _ in range(2)]
    assert route == "srun"
    return [subprocess.Popen(cmd + nodes, env={**env, **slurm_env(rank, port)}, **popen) for rank in range(2)]


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    return outputs


def one_process_draw(mini: dict, epoch: int) -> list[str]:
    """The training clips (names) one process draws in ``epoch`` with the seed the ranks must share."""
    names = []
    for key in ("balanced_train_hdf5", "unbalanced_train_hdf5"):
        with open_read_only(mini[key]) as hf:
            names += [decode_name(n) for n in hf["audio_name"][()]]
    sampler = build_weighted_sampler([mini["balanced_train_hdf5"], mini["unbalanced_train_hdf5"]], epoch_len=16,
                                     sampler_replace=True, seed=SEED, num_replicas=1, rank=0)  # as mini_train draws
    sampler.set_epoch(epoch)
    return [names[i] for i in sampler]


def records(folder: Path) -> dict[int, list[dict]]:
    """Every process' record, by rank, in the order the processes started."""
    found: dict[int, list[dict]] = {}
    for path in sorted(folder.glob("rank*-pid*.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(path.read_text())
        found.setdefault(record["rank"], []).append(record)
    return found


@pytest.fixture(scope="module")
def reference(mini_audioset, tmp_path_factory):
    """The uninterrupted DDP=2 run (inside a SLURM batch script, without srun): the weights every route must reach."""
    tmp = tmp_path_factory.mktemp("ddp2")
    wandb_before = wandb_runs()
    (proc,) = launch("DDP=2 in sbatch", mini_audioset, tmp)
    output = wait_all([proc], timeout=300)[0]
    assert proc.returncode == 0, output[-5000:]
    return {"tmp": tmp, "weights": torch.load(tmp / "record" / "weights-rank0.pt"), "output": output,
            "wandb_runs": len(wandb_runs() - wandb_before)}


def check_route(tmp: Path, mini: dict, reference: dict, launches: int) -> None:
    """The assertions every route shares (module docstring)."""
    by_rank = records(tmp / "record")
    assert sorted(by_rank) == [0, 1]
    for rank, recs in by_rank.items():
        assert all(r["world_size"] == 2 and r["seed"] == SEED for r in recs), recs  # rank 0's seed everywhere
        if rank:
            assert any(r["own_seed"] != SEED for r in recs)  # it started with one of its own
        trained: dict[str, list[str]] = {}
        for r in recs:  # a resumed launch retrains what the first did after its last checkpoint
            trained.update(r["batches"])
        for epoch in (0, 1):
            mine = [name for b in (0, 1) for name in trained[f"{epoch}:{b}"]]
            assert mine == one_process_draw(mini, epoch)[rank::2], (rank, epoch)
        weights = torch.load(tmp / "record" / f"weights-rank{rank}.pt")
        assert weights.keys() == reference["weights"].keys()
        for key, value in reference["weights"].items():
            assert torch.equal(weights[key], value), (rank, key)
    assert len(list((tmp / "out" / "audioset").iterdir())) == 1  # one run folder
    assert sorted(p.name for p in (tmp / "sacred").iterdir() if p.name != "_sources") == \
        [str(i + 1) for i in range(launches)]  # one sacred run per launch


def test_ddp_inside_an_sbatch_script_is_the_reference(reference, mini_audioset):
    check_route(reference["tmp"], mini_audioset, reference, launches=1)
    run = sacred_run(reference["tmp"] / "sacred")
    assert run["status"] == "COMPLETED" and run["info"]["world_size"] == 2 and run["config"]["seed"] == SEED
    assert run["config"]["trainer"]["devices"] == 2  # what DDP=2 sets
    assert run["config"]["models"]["net"]["grad_checkpointing"] is True
    assert reference["wandb_runs"] == 1  # rank 0's only
    # 7 clips on 2 ranks: the padding is removed before scoring, every clip scored once
    assert run["result"]["val_examples"] == 7 and "duplicates" not in reference["output"]


@pytest.mark.parametrize(("route", "stop", "says"), [
    ("trainer.devices=2", "1:2:term", "stopped by SIGTERM"),  # agreed at the start of the next step
    ("torchrun --rdzv-id", "0:3:kill", ") is gone (killed?)"),  # "rank 0 (pid ...) is gone", marked by rank 1
    ("torchrun", "1:3:kill", None),
    ("srun", "0:3:kill", ") is gone (killed?)"),
])
def test_route_trains_once_on_the_shared_draw_and_resumes_exactly_after_losing_a_rank(
        route, stop, says, reference, mini_audioset, tmp_path):
    wandb_before = wandb_runs()
    port = slurm_port() if route == "srun" else free_port()
    procs = launch(route, mini_audioset, tmp_path, port, stop=stop)
    outputs = wait_all(procs, timeout=300)
    ended = time.time() - float((tmp_path / "record" / "stopped").read_text())
    assert all(p.returncode != 0 for p in procs), outputs
    assert ended < ENDS_WITHIN_S, f"the processes ended {ended:.0f} s after rank {stop[0]} was lost"
    run = json.loads((tmp_path / "sacred" / "1" / "run.json").read_text())  # (a killed rank 0 wrote no info.json)
    assert run["status"] == "FAILED", run["status"]  # never left RUNNING
    if says:
        assert says in run["fail_trace"][-1], run["fail_trace"]
    (last,) = (tmp_path / "out").glob("audioset/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 3  # the mid-epoch checkpoint (epoch 1, batch 1)

    port = slurm_port() if route == "srun" else free_port()
    procs = launch(route, mini_audioset, tmp_path, port, resume=last)
    outputs = wait_all(procs, timeout=300)
    assert all(p.returncode == 0 for p in procs), outputs[0][-5000:] + outputs[-1][-5000:]
    assert sacred_run(tmp_path / "sacred", 2)["status"] == "COMPLETED"
    check_route(tmp_path, mini_audioset, reference, launches=2)
    assert len(wandb_runs() - wandb_before) == (2 if route in WANDB_ROUTES else 0)  # rank 0's, one per launch


def wandb_runs() -> set[Path]:
    return set(Path(os.environ["WANDB_DIR"]).glob("wandb/offline-run-*"))
