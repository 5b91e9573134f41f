"""Timing training steps: the one timed loop of ``model_speed_test`` and ``benchmarks/``."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], steps: int, device: torch.device | str, warmup: int = 0) -> float:
    """Seconds taken by ``steps`` calls of ``step`` after ``warmup`` untimed ones (kernel selection,
    allocations), with the device synchronised at both ends."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start
