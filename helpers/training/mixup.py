"""Batch mixup on spectrograms (Zhang et al. 2018), as PaSST trains with it.

Every example ``i`` is mixed with example ``perm[i]`` of the same batch with its own weight
``lam_i ~ Beta(alpha, alpha)``, folded to ``max(lam_i, 1 - lam_i)`` so the example itself always
dominates. Inputs and targets are mixed with the same ``perm`` and ``lam``.
"""

from __future__ import annotations

import torch

from helpers.data.augment import folded_beta


def draw_mixup(batch_size: int, alpha: float, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(perm [B] long, lam [B] float32)`` for one batch, drawn on ``device``.

    Drawn where the batch is, from that device's (seeded) generator: no host-to-device copy, so
    the training step never waits for the accelerator here.
    """
    if alpha <= 0:
        raise ValueError(f"mixup_alpha must be > 0, got {alpha} (use `with nomixup` to switch mixup off)")
    return torch.randperm(batch_size, device=device), folded_beta(alpha, batch_size, device=device)


def mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]`` with ``lam`` broadcast over all but the batch axis."""
    lam = lam.to(dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x * lam + x[perm] * (1.0 - lam)
