"""Timing training steps: the one timed loop of ``model_speed_test`` and ``benchmarks/``."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

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


def machine_description(device: torch.device | str) -> str:
    """The GPU's name, or the CPU model with its cores, torch version and threads (for benchmark reports)."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
