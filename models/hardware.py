"""What the hardware runs fast: the one place precision decisions are taken from.

* :func:`cpu_has_fast_bf16`: whether oneDNN runs bf16 natively on this CPU (AVX512-BF16/AMX);
  elsewhere bf16 is emulated and much slower than fp32.
* :func:`fastest_autocast_dtype`: the mixed-precision dtype worth using on a device, or None
  for fp32. Training's default ``trainer.precision`` (:mod:`helpers.experiment.trainer`) and
  inference (:mod:`helpers.inference`) both follow it.
"""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fastest_autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on GPUs that support it (Ampere and newer; no loss
    scaling needed), else fp16; bf16 on CPUs with native bf16 kernels; None (fp32) on other CPUs
    and on other devices."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None
