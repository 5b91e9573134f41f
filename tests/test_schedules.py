"""Learning-rate schedules: the exact multipliers of exp_lin and cos_cyc."""

import math

import pytest
import torch

from helpers.training.schedules import cosine_cycle, exp_warmup, exp_warmup_linear_down, get_lr_lambda


def test_exp_warmup_ramps_exponentially_to_one():
    f = exp_warmup(5)
    assert f(0) == pytest.approx(math.exp(-5 * (1 - 0.5 / 5) ** 2)) == pytest.approx(0.01742, abs=1e-5)
    assert f(2) == pytest.approx(math.exp(-5 * (1 - 2 / 5) ** 2))
    assert [f(e) for e in range(5)] == sorted(f(e) for e in range(5))  # increasing
    assert f(5) == f(100) == 1.0
    assert exp_warmup(0)(0) == 1.0  # no warm-up


def test_exp_lin_plateau_then_linear_decay_to_last_value():
    f = exp_warmup_linear_down(warm_up_len=5, ramp_down_len=50, ramp_down_start=50, last_lr_value=0.01)
    assert f(0) == pytest.approx(math.exp(-5 * 0.9**2))  # epoch 0 counts as half an epoch, as in the original
    assert f(5) == f(30) == f(50) == 1.0
    assert f(75) == pytest.approx(0.01 + 0.99 * 25 / 50)  # halfway down
    assert f(100) == pytest.approx(0.01)
    assert f(130) == pytest.approx(0.01)
    decay = [f(e) for e in range(50, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_cos_cyc_cycles_from_last_value_to_one_and_stops_at_a_cycle_boundary():
    f = cosine_cycle(cycle_len=20, ramp_down_start=50, last_lr_value=0.01)
    assert f(0) == pytest.approx(0.01)
    assert f(10) == pytest.approx(1.0)  # middle of the first cycle: warm-up done
    assert f(20) == pytest.approx(0.01)
    assert f(30) == pytest.approx(1.0)  # second cycle
    assert f(60) == pytest.approx(0.01)  # ceil(50 / 20) * 20 = 60: last boundary
    assert f(61) == f(200) == 0.01


@pytest.mark.parametrize(("cycle_len", "ramp_down_start"), [(5, 50), (5, 52), (4, 50), (7, 30), (3, 1)])
def test_cos_cyc_has_the_original_phase_for_odd_cycles_too(cycle_len, ramp_down_start):
    """Against the original's formula written out: phase (epoch + L // 2) / L, stop at L + (start - 1) // L * L."""
    last = 0.01
    stop = cycle_len + (ramp_down_start - 1) // cycle_len * cycle_len
    f = cosine_cycle(cycle_len, ramp_down_start, last)
    for epoch in range(stop + 10):
        phase = (epoch + float(cycle_len // 2)) / cycle_len
        expected = last if epoch > stop else last + (1 - last) * 0.5 * (math.cos(2 * math.pi * phase) + 1)
        assert f(epoch) == pytest.approx(expected), epoch
    assert cosine_cycle(5, 50, last)(0) == pytest.approx(last + (1 - last) * 0.5 * (math.cos(0.8 * math.pi) + 1))


def test_get_lr_lambda_selects_mode_and_rejects_unknown():
    assert get_lr_lambda("exp_lin", 5, 50, 50, 0.01)(100) == pytest.approx(0.01)
    assert get_lr_lambda("cos_cyc", 20, 50, 50, 0.01)(10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="schedule_mode"):
        get_lr_lambda("linear")


def test_lambda_lr_steps_per_epoch_with_the_multiplier():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=2e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, get_lr_lambda("exp_lin", 2, 3, 2, 0.1))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [math.exp(-5 * 0.75**2), math.exp(-5 * 0.25), 1, 1, 0.1 + 0.9 * 0.5, 0.1, 0.1]
    assert lrs == pytest.approx([2e-5 * m for m in expected])
