"""Checkpoints written in the background: the state of the step that asked, in order, failures not lost."""

from __future__ import annotations

import threading

import pytest
import torch

from helpers.training.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError
from helpers.training.checkpoint_writer import BackgroundWriter, host_copy


def test_the_file_holds_the_state_of_the_save_not_what_training_did_after(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    gate = threading.Event()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, **kw: (gate.wait(10), real_save(obj, f, **kw)))
    weights = torch.zeros(1000)
    io.save_checkpoint({"state_dict": {"w": weights}, "step": [1]}, tmp_path / "a.ckpt")  # returns at once
    weights.add_(1.0)  # training goes on while the file is being written
    gate.set()
    io.wait()
    saved = io.load_checkpoint(tmp_path / "a.ckpt")
    assert torch.equal(saved["state_dict"]["w"], torch.zeros(1000)) and saved["step"] == [1]


def test_writes_and_removals_run_in_the_order_asked(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"n": 1}, tmp_path / "best-1.ckpt")
    io.save_checkpoint({"n": 2}, tmp_path / "best-2.ckpt")
    io.remove_checkpoint(tmp_path / "best-1.ckpt")  # Lightning drops the superseded best after the new one
    io.teardown()  # when training ends: everything asked for is on the disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-2.ckpt"]


def test_a_failed_write_is_raised_in_the_training_thread_once(tmp_path):
    writer = BackgroundWriter()
    writer.submit(lambda: (_ for _ in ()).throw(CheckpointSaveError(28, "the disk is full")))
    with pytest.raises(CheckpointSaveError, match="disk is full"):
        writer.wait()
    writer.wait()  # reported once; later jobs run again
    done = []
    writer.submit(lambda: done.append(1))
    writer.wait()
    assert done == [1]


def test_host_copy_copies_tensors_and_rebuilds_containers():
    t = torch.ones(3)
    state = {"a": [t, (t, 2)], "b": {"c": t}, "d": "x"}
    copy = host_copy(state)
    t.zero_()
    assert torch.equal(copy["a"][0], torch.ones(3)) and torch.equal(copy["b"]["c"], torch.ones(3))
    assert copy["a"][1][1] == 2 and copy["d"] == "x" and isinstance(copy["a"][1], tuple)
