"""Timing training steps: the one bare training step and the one timed loop of ``model_speed_test``
and ``benchmarks/`` (the full step of a run, with mixup and logging, is the Lightning module's)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

#: a network's forward: ``spectrograms -> (logits, embedding)``
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def training_step(net: Forward, spectrograms: torch.Tensor, targets: torch.Tensor,
                  loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                  autocast_dtype: torch.dtype | None = None,
                  scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One bare training step on a batch already on the device: forward and ``loss(logits, targets)``
    (under autocast in ``autocast_dtype``; None: fp32), backward, optimizer step (through ``scaler``
    for fp16). Returns the loss, not read back (no host sync)."""
    kind = spectrograms.device.type
    with torch.autocast(kind, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits, _ = net(spectrograms)
        value = loss(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        value.backward()
        optimizer.step()
    else:
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
    return value.detach()


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
