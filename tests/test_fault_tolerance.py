"""Fault tolerance: what survives a killed process, a full disk, NaN losses, bad files and a dead DDP rank.

Process faults are real: subprocesses killed with SIGKILL (by themselves at a chosen moment, so
the moment is exact, or from here), a real tmpfs that fills up. Everything else runs in-process
with the tiny model (``tiny_model mini_train``).
"""

from __future__ import annotations

import builtins
import csv
import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from downstream_data import own_folder
from experiment_cli import ROOT, copy_hdf5, data_args, data_config

from helpers.data import atomic
from helpers.data.corrupt_clips import read_corrupt_log
from helpers.data.hdf5_dataset import Hdf5FileError, open_read_only
from helpers.experiment import ddp
from helpers.training.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError
from helpers.training.nonfinite import NonFiniteError, NonFiniteGuard
from models.checkpoints import CheckpointError

PYTHON = sys.executable
#: the recipe every training run here uses: 2 epochs of 5 batches, a step checkpoint every 2 steps
RUN = dict(seed=3, checkpointing={"last_every_n_steps": 2}, wandb={"mode": "disabled"})


def train_in_process(mini: dict, out: Path, **updates):
    """One ``mini_train tiny_model`` run in this process; returns sacred's run."""
    from ex_audioset import ex

    cfg = data_config(mini)
    cfg.update(output_dir=str(out), **RUN)
    for key, value in updates.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    return ex.run(named_configs=["mini_train", "tiny_model"], config_updates=cfg, options={"--loglevel": "ERROR"})


def cli_args(mini: dict, *more: str) -> list[str]:
    """The command line of :func:`train_in_process` (same config, same seed), plus ``more`` updates."""
    return ["with", "mini_train", "tiny_model", *data_args(mini), "seed=3", "checkpointing.last_every_n_steps=2",
            "wandb.mode=disabled", *more]


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def mini(mini_audioset, tmp_path_factory):
    """The mini AudioSet with a training clip that does not decode (row 5 of the balanced file)."""
    path = copy_hdf5(mini_audioset["balanced_train_hdf5"], tmp_path_factory.mktemp("corrupt") / "balanced.hdf",
                     rows=16, corrupt_row=5)
    return {**mini_audioset, "basedataset_config": {**mini_audioset["basedataset_config"], "balanced_train_hdf5": path}}


@pytest.fixture(scope="module")
def reference(mini, tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with."""
    out = tmp_path_factory.mktemp("reference")
    run = train_in_process(mini, out)
    return {"result": run.result, "last": load(run.info["last_checkpoint"]), "info": run.info}


@pytest.mark.slow
def test_a_training_clip_that_fails_to_decode_is_skipped_and_counted(reference):
    assert reference["info"]["corrupt_clips"] >= 1
    assert reference["info"]["corrupt_clip_examples"][0].startswith("Ybal00000005")


# ------------------------------------------------------------------------------ kill and resume
@pytest.mark.slow
@pytest.mark.precision  # bit-exact in either precision
def test_killed_during_a_mid_epoch_save_resumes_to_the_same_weights_and_metrics(mini, reference, tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "out"
    # SIGKILL half-way through writing the step-8 checkpoint (epoch 1, batch 3 of 5)
    killed = subprocess.run([PYTHON, str(ROOT / "tests" / "sigkill_during_save.py"), "8",
                             *cli_args(mini, f"output_dir={out}")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (checkpoints,) = out.glob("audioset/*/checkpoints")
    assert (checkpoints / "last.ckpt.partial").stat().st_size > 0  # the save it died in
    before = load(checkpoints / "last.ckpt")  # the previous step checkpoint, intact
    assert (before["global_step"], before["epoch"], before["callbacks"]["TrainingPosition"]) == \
        (6, 1, {"epoch": 1, "batch": 1})

    loads = []  # how the checkpoint is read: tensors and plain data only (weights_only), no code from the file
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(kwargs.get("weights_only"))
                        or real_load(*args, **kwargs))
    resumed = train_in_process(mini, out, ckpt_path=str(checkpoints / "last.ckpt"))
    monkeypatch.undo()
    assert loads == [True, True]  # its record first (the seed and batch size a resume keeps), then the state
    assert Path(resumed.info["run_dir"]) == checkpoints.parent  # continues in the same run folder
    assert not (checkpoints / "last.ckpt.partial").exists()  # replaced by the next save
    after, ref = load(checkpoints / "last.ckpt"), reference["last"]
    assert (after["global_step"], after["epoch"]) == (ref["global_step"], ref["epoch"]) == (10, 1)
    # bit for bit: weights and the SWA average, optimizer moments, LR schedule, SWA counters
    for key, value in ref["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value), key
    for (_, a), (_, b) in zip(sorted(after["optimizer_states"][0]["state"].items()),
                              sorted(ref["optimizer_states"][0]["state"].items()), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert after["lr_schedulers"] == ref["lr_schedulers"]
    assert resumed.result == reference["result"]


@pytest.mark.slow
def test_run_checkpoints_hold_only_tensors_and_plain_data(reference):
    # torch's own weights-only loader takes them as they are: resuming runs no code from the file
    last = reference["info"]["last_checkpoint"]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []
    loaded = torch.load(last, map_location="cpu", weights_only=True)
    assert loaded["callbacks"]["TrainingPosition"] == {"epoch": 2, "batch": 0} and loaded["optimizer_states"]


@pytest.mark.slow
@pytest.mark.precision  # bit-exact in either precision
def test_same_seed_gives_the_same_metrics_with_any_number_of_loader_workers(mini, reference, tmp_path):
    again = train_in_process(mini, tmp_path, datasets={"training": {"batch_size": 4, "num_workers": 2}})
    assert again.result == reference["result"]
    last = load(again.info["last_checkpoint"])
    assert all(torch.equal(last["state_dict"][k], v) for k, v in reference["last"]["state_dict"].items())


@pytest.mark.slow
def test_a_missing_or_damaged_checkpoint_to_resume_from_is_an_error_naming_it(mini_audioset, reference, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        train_in_process(mini_audioset, tmp_path, ckpt_path=str(tmp_path / "nowhere.ckpt"))
    damaged = tmp_path / "checkpoints" / "last.ckpt"
    damaged.parent.mkdir()
    torch.save(reference["last"], damaged)
    damaged.write_bytes(damaged.read_bytes()[:5000])  # truncated, as by a failed copy
    with pytest.raises(CheckpointError, match=f"{damaged}.*truncated"):
        train_in_process(mini_audioset, tmp_path, ckpt_path=str(damaged))


# ------------------------------------------------------------------------------- checkpoint IO
class _FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    io.wait()
    monkeypatch.setattr(atomic, "open", lambda p, mode: _FullDisk(builtins.open(p, mode)), raising=False)
    io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)  # written in the background
    with pytest.raises(CheckpointSaveError, match=rf"disk is full.*{path}.*previous last.ckpt is intact.*ckpt_path="):
        io.save_checkpoint({"global_step": 3, "w": torch.zeros(3)}, path)  # the next save raises it
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1 and list(tmp_path.iterdir()) == [path]
    with pytest.raises(CheckpointSaveError, match="disk is full"):  # in the calling thread
        monkeypatch.setattr(atomic, "open", lambda p, mode: _FullDisk(builtins.open(p, mode)), raising=False)
        AtomicCheckpointIO(background=False).save_checkpoint({"global_step": 2}, path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None or subprocess.run(
    ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0,
    reason="needs user and mount namespaces (unshare) for a private tmpfs")
def test_disk_full_while_training_reports_it_and_the_last_checkpoint_survives(mini_audioset, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    args = cli_args(mini_audioset, "trainer.max_epochs=50", "wandb.mode=offline")  # wandb writes there too
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", PYTHON,
                           str(ROOT / "tests" / "disk_full_run.py"), str(disk), "6m", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["returncode"] == 1
    assert "the disk is full" in report["output"] and "the previous last.ckpt is intact" in report["output"]
    assert f"ckpt_path={report['last_checkpoint']}" in report["output"]  # how to resume, with the real path
    assert report["last_step"] >= 2 and report["partial_files"] == []  # the last good checkpoint loads
    assert report["run_json_parses"]  # sacred's record is old, not truncated
    assert report["stopped_after_s"] < 60


# ---------------------------------------------------------------------------------------- NaN
@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_after_saving_the_last_good_state(mini_audioset, tmp_path, monkeypatch):
    from helpers.training.tasks import MultiLabelTask

    real_loss, calls = MultiLabelTask.loss, []

    def loss(self, *args, **kwargs):
        value = real_loss(self, *args, **kwargs)
        if torch.is_grad_enabled():  # training steps only
            calls.append(1)
            if len(calls) == 4:  # global step 3
                return value * float("nan")
        return value

    monkeypatch.setattr(MultiLabelTask, "loss", loss)
    with pytest.raises(NonFiniteError, match=r"NaN/inf at training step 3 .*found at step 4.*1 step\(s\)") as err:
        train_in_process(mini_audioset, tmp_path, trainer={"log_every_n_steps": 50})  # found by the step checkpoint
    (last,) = tmp_path.glob("audioset/*/checkpoints/last.ckpt")
    assert str(last) in str(err.value)
    saved = load(last)
    assert saved["global_step"] == 4 and saved["callbacks"]["TrainingPosition"] == {"epoch": 0, "batch": 4}
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    adam_steps = {float(s["step"]) for s in saved["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3.0}  # 4 steps taken, the NaN one not applied


@pytest.mark.slow
def test_sigterm_stops_at_the_end_of_the_batch_as_a_failure(mini_audioset, tmp_path, monkeypatch):
    from helpers.training.tasks import MultiLabelTask

    previous_sigint = signal.getsignal(signal.SIGINT)

    real_loss = MultiLabelTask.loss

    def loss(self, *args, **kwargs):
        if torch.is_grad_enabled():
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill <pid>`, a scheduler's time limit, a preemption
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(MultiLabelTask, "loss", loss)
    with pytest.raises(RuntimeError, match="stopped by SIGTERM.*no checkpoint was written yet"):  # not exit 0
        train_in_process(mini_audioset, tmp_path / "first")
    calls = []

    sent = [signal.SIGTERM]

    def loss_after_a_checkpoint(self, *args, **kwargs):  # SIGTERM in step 4, after the step-2 checkpoint
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), sent[0])
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(MultiLabelTask, "loss", loss_after_a_checkpoint)
    with pytest.raises(RuntimeError, match="stopped by SIGTERM") as err:
        train_in_process(mini_audioset, tmp_path / "second")
    resume_from = Path(str(err.value).split("ckpt_path=")[1])  # the real path, to paste
    assert resume_from.is_file() and resume_from.name == "last.ckpt"

    calls.clear()  # Ctrl-C stops the same way (not Lightning's exit(1)), with the same advice
    sent[0] = signal.SIGINT
    with pytest.raises(RuntimeError, match=r"stopped by Ctrl-C \(SIGINT\) at the end of a batch; resume") as err:
        train_in_process(mini_audioset, tmp_path / "third")
    assert Path(str(err.value).split("ckpt_path=")[1]).is_file()
    assert signal.getsignal(signal.SIGINT) == previous_sigint  # the process' own handler is back


class _ToyModule(pl.LightningModule):
    """A linear model whose loss is NaN at the given steps."""

    def __init__(self, nan_steps: set[int]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nan_steps = nan_steps

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step in self.nan_steps else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01, fused=True)


def test_with_fp16_loss_scaling_nan_steps_are_counted_and_logged_not_fatal(tmp_path):
    from pytorch_lightning.plugins.precision import MixedPrecision
    from torch.utils.data import DataLoader, TensorDataset

    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1.0))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", plugins=[fp16], logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, callbacks=[NonFiniteGuard(None, check_every=1)])
    trainer.fit(_ToyModule({2, 5, 6}), DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=4))
    assert trainer.global_step == 10 and float(trainer.callback_metrics["skipped_steps"]) == 3.0


# ----------------------------------------------------------------------------------- bad data
def _fails_before_training(monkeypatch, mini, tmp_path, error, match, **basedataset):
    from helpers.experiment import commands

    monkeypatch.setattr(commands, "build_trainer", lambda *a, **k: pytest.fail("the Trainer was built"))
    with pytest.raises(error, match=match):
        train_in_process(mini, tmp_path, basedataset={**mini["basedataset_config"], **basedataset})


def test_truncated_hdf5_is_an_error_naming_it_at_start_up(monkeypatch, mini_audioset, tmp_path):
    cut = tmp_path / "balanced_train_segments_mp3.hdf"
    data = Path(mini_audioset["balanced_train_hdf5"]).read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # a copy that stopped at two thirds
    _fails_before_training(monkeypatch, mini_audioset, tmp_path, Hdf5FileError,
                           rf"(?s){cut} cannot be read: it is truncated.*interrupted.*create_h5pymp3_dataset",
                           balanced_train_hdf5=str(cut))


def test_labels_beyond_n_classes_are_an_error_before_training(monkeypatch, mini_audioset, tmp_path):
    bad = Path(copy_hdf5(mini_audioset["eval_hdf5"], tmp_path / "eval.hdf", rows=8))
    with h5py.File(bad, "r+") as hf:
        target = hf["target"][()]
        target[5, -1] |= 1  # label 527 on clip 5: the spare bit of 527 packed labels
        hf["target"][...] = target
    _fails_before_training(monkeypatch, mini_audioset, tmp_path, ValueError,
                           rf"{bad}: 1 clip\(s\) \(the first at index 5\) have labels numbered 527", eval_hdf5=str(bad))


# ---------------------------------------------------------------------------- prepare scripts
@pytest.mark.slow
@pytest.mark.parametrize("moment", ["encode:4", "shard:2", "assemble:2"])
def test_prepare_killed_anywhere_resumes_to_the_same_bytes(mini_audioset, tmp_path, moment):
    files = ["--segments", mini_audioset["segments_csv"]["eval_segments"],
             "--audio-dir", mini_audioset["audio_dir"]["eval_segments"], "--labels", mini_audioset["labels_csv"]]
    clean, out = tmp_path / "clean.hdf", tmp_path / "resumed.hdf"
    module = ["-m", "audioset.prepare_scripts.create_h5pymp3_dataset"]
    assert subprocess.run([PYTHON, *module, *files, "--out", str(clean)], cwd=ROOT, capture_output=True).returncode == 0
    killed = subprocess.run([PYTHON, str(ROOT / "tests" / "sigkill_prepare.py"), moment, *files, "--out", str(out),
                             "--shard-size", "2"], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL and not out.exists(), killed.stderr[-2000:]
    rerun = subprocess.run([PYTHON, *module, *files, "--out", str(out), "--shard-size", "2"], cwd=ROOT,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert out.read_bytes() == clean.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("resumed")) == ["resumed.hdf"]


# ---------------------------------------------------------------------------------------- DDP
def _children_of(pid: int, running: str = "") -> list[int]:
    """Child processes of ``pid`` whose command line contains ``running`` (sacred's GitPython keeps a git child)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]

    def command_line(child: int) -> bytes:
        try:
            return Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:  # ended meanwhile
            return b""

    return [c for c in children if running.encode() in command_line(c)]


def _wait(proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    proc.wait(timeout=timeout)
    return time.monotonic() - start


def _fake_sacred_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"status": "RUNNING", "heartbeat": "then"}))
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_ddp_rank_zero_killed_the_other_rank_stops_and_marks_the_run_failed(mini_audioset, tmp_path):
    folder, out = tmp_path / "sacred", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    rank0 = subprocess.Popen([PYTHON, "ex_audioset.py", "-F", str(folder),
                              *cli_args(mini_audioset, f"output_dir={out}", "trainer.max_epochs=1000")],
                             cwd=ROOT, env={**env, "DDP": "2"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("audioset/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
            assert rank0.poll() is None, "training ended early"
            time.sleep(0.1)
        (rank1,) = _children_of(rank0.pid, running="ex_audioset.py")
        rank0.kill()  # SIGKILL: rank 0 cannot tell anyone
        start = time.monotonic()
        while not _gone(rank1):
            assert time.monotonic() - start < 30, "rank 1 still running 30 s after rank 0 was killed"
            time.sleep(0.05)
    finally:
        rank0.kill()
        rank0.wait()
    run = json.loads((folder / "1" / "run.json").read_text())
    # marked by the child's parent watch or by its rank watch, whichever saw it first
    assert run["status"] == "FAILED" and f"rank 0 (pid {rank0.pid}) is gone" in run["fail_trace"][-1]


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] in ("Z", "X")


_SLEEPER = [PYTHON, "-c", "import time; time.sleep(600)"]
#: a DDP child as rank 0 launches it, set up as in training, then stuck (as in a collective that waits forever)
_STUCK_CHILD = ("import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
                "'from helpers.experiment.ddp import supervise_ranks; supervise_ranks(); print(\"ready\", flush=True); "
                "import time; time.sleep(600)'], env={**os.environ, 'LOCAL_RANK': '1', "
                f"'{ddp.PARENT_PID_ENV}': str(os.getpid())}}); print(child.pid, flush=True); time.sleep(600)")


@pytest.mark.slow
def test_ddp_child_whose_rank_zero_is_killed_stops_even_when_stuck(tmp_path):
    """No collective reports the lost rank 0 here (as with NCCL): the child's watcher stops it."""
    run_dir = _fake_sacred_run(tmp_path / "run")
    rank0 = subprocess.Popen([PYTHON, "-c", _STUCK_CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, ddp.SACRED_RUN_DIRS_ENV: str(run_dir)})
    rank1 = int(rank0.stdout.readline())
    assert rank0.stdout.readline().strip() == "ready"
    rank0.kill()
    rank0.wait()
    start = time.monotonic()
    while not _gone(rank1):
        assert time.monotonic() - start < ddp.POLL_S + 5, "rank 1 still running after rank 0 was killed"
        time.sleep(0.05)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "FAILED" and f"DDP rank 0 (pid {rank0.pid}) is gone" in run["fail_trace"][0]


@pytest.mark.slow
def test_ddp_rank_zero_stuck_after_a_child_died_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    """Lightning's observer would kill rank 0 within 5 s, before it records anything; ours waits, then records."""
    run_dir = _fake_sacred_run(tmp_path / "run")
    monkeypatch.setenv(ddp.SACRED_RUN_DIRS_ENV, str(run_dir))
    monkeypatch.setattr(ddp, "FAILURE_GRACE_S", 1.0)
    rank0, rank1 = subprocess.Popen(_SLEEPER), subprocess.Popen(_SLEEPER)  # rank 0 stands in for this process
    observer = ddp._PatientChildObserver(main_pid=rank0.pid, child_processes=[rank1])
    observer.start()
    rank1.kill()
    assert _wait(rank0, timeout=ddp.POLL_S + 10) >= 1.0 and rank0.returncode == -signal.SIGKILL
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "FAILED"
    assert f"DDP rank 1 (pid {rank1.pid}) was killed by SIGKILL; rank 0 did not stop within 1 s" in run["fail_trace"][0]


def test_rank_zero_names_the_child_that_died(monkeypatch):
    child = subprocess.Popen([PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    child.wait()
    trainer = type("T", (), {"strategy": type("S", (), {"launcher": type("L", (), {"procs": [child]})()})()})()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert ddp.lost_ranks(trainer) == f"DDP rank 1 (pid {child.pid}) was killed by SIGKILL"


def test_a_nonfinite_weight_is_never_saved(tmp_path):
    guard = NonFiniteGuard(None)
    trainer = type("T", (), {"global_step": 7})()
    with pytest.raises(NonFiniteError, match="w.*step 7.*not written"):
        guard.on_save_checkpoint(trainer, None, {"state_dict": {"v": torch.ones(2), "w": torch.tensor([np.inf])}})
    guard.on_save_checkpoint(trainer, None, {"state_dict": {"v": torch.ones(2)}})


# ------------------------------------------------------- bad clips in every dataset, not only AudioSet
def _corrupt_training_data(dataset: str, mini: dict, folder: Path) -> dict:
    """``basedataset`` updates pointing at a copy of the mini dataset in which one training clip does not decode."""
    if dataset == "esc50":  # wav files; fold 1 is the test fold, so the first clip of fold 2 trains
        base = Path(shutil.copytree(mini["base_dir"], folder / "esc50"))
        with open(base / "meta" / "esc50.csv", newline="") as fh:
            victim = next(row["filename"] for row in csv.DictReader(fh) if row["fold"] == "2")
        (base / "audio_32k" / victim).write_bytes(b"RIFF" + bytes(200))
        return {"base_dir": f"{base}/"}
    key, name = {"openmic": ("openmic_train_hdf5", "mp3/openmic_train.csv_mp3.hdf"),
                 "fsd50k": ("balanced_train_hdf5", "mp3/FSD50K.train_mp3.hdf")}[dataset]
    with open_read_only(mini["base_dir"] + name) as hf:
        rows = len(hf["audio_name"])
    return {key: copy_hdf5(mini["base_dir"] + name, folder / "train.hdf", rows=rows, corrupt_row=2)}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["esc50", "openmic", "fsd50k"])
def test_every_dataset_skips_and_counts_a_training_clip_that_fails_to_decode(dataset, request, tmp_path):
    mini = request.getfixturevalue(f"mini_{dataset}")
    ex = importlib.import_module(f"ex_{dataset}").ex
    updates = {"basedataset": {"base_dir": mini["base_dir"], "clip_length": 1, "wavmix": False,
                               **_corrupt_training_data(dataset, mini, tmp_path)},
               "datasets": {"training": {"batch_size": 8, "num_workers": 0}, "test": {"num_workers": 0}},
               "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0},
               "wandb": {"mode": "disabled"}, "output_dir": str(tmp_path / "out")}
    with pytest.warns(RuntimeWarning, match="corrupt audio clip"):
        run = ex.run(named_configs=["tiny_model"], config_updates=updates, options={"--loglevel": "ERROR"})
    assert run.status == "COMPLETED"
    assert run.info["corrupt_clips"] == 1  # one epoch: the bad clip was drawn once, skipped and counted


@pytest.mark.slow
def test_own_audio_files_that_break_during_the_run_are_skipped_and_counted(tmp_path):
    from ex_folder import ex
    from folder.dataset import build_set

    audio_dir, csv_path = own_folder(tmp_path)
    updates = {"basedataset": {"csv": str(csv_path), "audio_dir": str(audio_dir), "corrupt_log": str(tmp_path / "log")}}
    cfg = ex.run("print_config", config_updates=updates, options={"--loglevel": "ERROR"}).config["basedataset"]
    test_set = build_set(cfg, train=False)  # every file is checked here, at start-up
    Path(test_set.paths[1]).write_bytes(b"not audio any more")  # then one breaks
    with pytest.warns(RuntimeWarning, match="corrupt audio clip"):
        items = [test_set[i] for i in range(len(test_set))]
    assert items[1][1] == test_set.names[2]  # the next clip stands in for it
    assert test_set.num_corrupt == 1 and [index for index, _, _ in read_corrupt_log(tmp_path / "log")] == [1]
