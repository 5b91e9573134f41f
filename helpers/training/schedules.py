"""Learning-rate multipliers per epoch, for ``torch.optim.lr_scheduler.LambdaLR``.

Two schedules of the original framework:

* ``exp_lin``: exponential warm-up, plateau, linear ramp-down (:func:`exp_warmup_linear_down`).
* ``cos_cyc``: cosine cycles whose first half-cycle warms up (:func:`cosine_cycle`).

Every function returns ``f(epoch) -> multiplier`` of the base learning rate; Lightning steps the
scheduler once per epoch (``interval="epoch"``), so ``epoch`` is the 0-based epoch index.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LrLambda = Callable[[int], float]

SCHEDULE_MODES = ("exp_lin", "cos_cyc")


def exp_warmup(warm_up_len: int) -> LrLambda:
    """``exp(-5 (1 - t)^2)`` with ``t = max(epoch, 0.5) / warm_up_len``, 1 from ``warm_up_len`` on.

    As in the original, epoch 0 counts as half an epoch: the first multiplier is
    ``exp(-5 (1 - 0.5 / warm_up_len)^2)`` (0.0174 for 5 warm-up epochs), not ``exp(-5)``.
    """

    def multiplier(epoch: int) -> float:
        if warm_up_len <= 0 or epoch >= warm_up_len:
            return 1.0
        t = min(max(epoch, 0.5), warm_up_len) / warm_up_len
        return math.exp(-5.0 * (1.0 - t) ** 2)

    return multiplier


def linear_rampdown(ramp_down_start: int, ramp_down_len: int, last_lr_value: float) -> LrLambda:
    """1 until ``ramp_down_start``, then linear to ``last_lr_value`` over ``ramp_down_len`` epochs, then flat."""

    def multiplier(epoch: int) -> float:
        if epoch <= ramp_down_start:
            return 1.0
        done = epoch - ramp_down_start
        if ramp_down_len <= 0 or done >= ramp_down_len:
            return last_lr_value
        return last_lr_value + (1.0 - last_lr_value) * (ramp_down_len - done) / ramp_down_len

    return multiplier


def exp_warmup_linear_down(warm_up_len: int, ramp_down_len: int, ramp_down_start: int,
                           last_lr_value: float) -> LrLambda:
    """The ``exp_lin`` schedule: :func:`exp_warmup` times :func:`linear_rampdown`."""
    up = exp_warmup(warm_up_len)
    down = linear_rampdown(ramp_down_start, ramp_down_len, last_lr_value)
    return lambda epoch: up(epoch) * down(epoch)


def cosine_cycle(cycle_len: int, ramp_down_start: int, last_lr_value: float) -> LrLambda:
    """The ``cos_cyc`` schedule: cosine cycles between ``last_lr_value`` and 1, ``cycle_len`` epochs each.

    As the original: the phase is ``(epoch + cycle_len // 2) / cycle_len`` and the multiplier
    ``last + (1 - last) * (cos(2 pi phase) + 1) / 2``, so for even cycle lengths each cycle starts
    at ``last_lr_value`` and peaks in its middle (for odd ones, half an epoch earlier). Cycling stops
    after epoch ``cycle_len + (ramp_down_start - 1) // cycle_len * cycle_len`` (the first cycle
    boundary at or after ``ramp_down_start``); from then on the multiplier is ``last_lr_value``.
    The original used ``warm_up_len`` as the cycle length, and so does :func:`get_lr_lambda`.
    """
    if cycle_len <= 0:
        raise ValueError(f"cos_cyc needs a positive cycle length (warm_up_len), got {cycle_len}")
    stop = cycle_len + (ramp_down_start - 1) // cycle_len * cycle_len

    def multiplier(epoch: int) -> float:
        if epoch > stop:
            return last_lr_value
        phase = (epoch + cycle_len // 2) / cycle_len
        return last_lr_value + (1.0 - last_lr_value) * 0.5 * (math.cos(2.0 * math.pi * phase) + 1.0)

    return multiplier


def get_lr_lambda(schedule_mode: str = "exp_lin", warm_up_len: int = 5, ramp_down_start: int = 50,
                  ramp_down_len: int = 50, last_lr_value: float = 0.01) -> LrLambda:
    """The multiplier function of ``schedule_mode`` (one of :data:`SCHEDULE_MODES`)."""
    if schedule_mode == "exp_lin":
        return exp_warmup_linear_down(warm_up_len, ramp_down_len, ramp_down_start, last_lr_value)
    if schedule_mode == "cos_cyc":
        return cosine_cycle(warm_up_len, ramp_down_start, last_lr_value)
    raise ValueError(f"Unknown schedule_mode={schedule_mode!r}; use one of {SCHEDULE_MODES} "
                     f"(e.g. `with schedule_mode=exp_lin`)")
