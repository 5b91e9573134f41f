"""Stochastic weight averaging: the running mean, the epoch schedule and the callback."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from helpers.training.swa import SWACallback, average_into, is_swa_epoch, make_swa_copy


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
        net[1].running_mean.fill_(value)
    return net


def test_average_into_is_the_running_mean_of_snapshots():
    avg = make_swa_copy(_net(0.0))
    assert all(not p.requires_grad for p in avg.parameters())
    for n, value in enumerate([1.0, 2.0, 6.0]):
        average_into(avg, _net(value), n)
    assert torch.allclose(avg[0].weight, torch.full((2, 2), 3.0))  # (1 + 2 + 6) / 3
    assert torch.allclose(avg[1].running_mean, torch.full((2,), 6.0))  # buffers are copied


def test_first_average_copies_the_weights():
    avg = make_swa_copy(_net(5.0))
    average_into(avg, _net(1.0), 0)
    assert torch.allclose(avg[0].bias, torch.ones(2))


def test_the_audioset_schedule_averages_the_original_17_snapshots():
    # the original callback: start of epochs max(start - 1, 0), +freq, ... up to max_epochs - 1
    epochs = [e for e in range(130) if is_swa_epoch(e, swa_epoch_start=50, swa_freq=5)]
    assert epochs == list(range(49, 130, 5)) and len(epochs) == 17
    assert [e for e in range(10) if is_swa_epoch(e, 2, 1)] == list(range(1, 10))  # ESC-50 / OpenMIC
    assert [e for e in range(50) if is_swa_epoch(e, 10, 3)] == list(range(9, 50, 3))  # FSD50K
    assert [e for e in range(4) if is_swa_epoch(e, 0, 1)] == [0, 1, 2, 3]


def test_invalid_freq_is_rejected():
    with pytest.raises(ValueError, match="swa_freq"):
        SWACallback(swa_epoch_start=0, swa_freq=0)


class _Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net(0.0)
        self.net_swa = make_swa_copy(self.net)
        self.register_buffer("swa_n_averaged", torch.zeros((), dtype=torch.long))
        self.register_buffer("swa_last_epoch", torch.full((), -1, dtype=torch.long))


def test_callback_averages_at_the_start_of_scheduled_epochs_once():
    module = _Module()
    cb = SWACallback(swa_epoch_start=2, swa_freq=2)
    for epoch in range(6):
        with torch.no_grad():
            for p in module.net.parameters():
                p.fill_(float(epoch))  # the weights after `epoch` completed epochs
        trainer = SimpleNamespace(current_epoch=epoch)
        cb.on_train_epoch_start(trainer, module)
        cb.on_train_epoch_start(trainer, module)  # a resumed run starting this epoch again: no second fold
    # epochs 1, 3, 5 averaged: (1 + 3 + 5) / 3
    assert int(module.swa_n_averaged) == 3 and int(module.swa_last_epoch) == 5
    assert torch.allclose(module.net_swa[0].weight, torch.full((2, 2), 3.0))
