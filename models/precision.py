"""Which precision a computation runs in: the one decision for training, evaluation and inference.

* :func:`decide_precision` turns (device, requested precision, command) into a Lightning
  precision string; everything that runs the network asks it: the Trainer of every experiment
  command, the speed test and :class:`helpers.inference.model.InferenceModel`.
* :func:`cpu_has_fast_bf16`: whether this CPU runs bf16 natively (AVX512-BF16/AMX). Elsewhere bf16
  is emulated and hundreds of times slower than fp32 (a 2048x2048 matmul: 0.3 GFLOP/s against ~150
  in fp32 on an AVX2-only AMD EPYC). ``PASST_CPU_PRECISION=fp32`` or ``=bf16`` forces the answer:
  fp32 on a bf16 machine (exact numbers, or a comparison with an fp32 reference), or the bf16 branch
  on any machine (the test suite runs its precision-sensitive tests both ways).
* :func:`fastest_autocast_dtype`: the mixed-precision dtype worth using on a device.

``"auto"`` (the default everywhere) means: for training and inference the fastest precision the
hardware runs natively (bf16-mixed on GPUs with bf16 and on CPUs with native bf16, 16-mixed on older
GPUs, else 32-true); for evaluation (``evaluate_only``, whose purpose is to reproduce a published
mAP) 32-true. An explicit request is kept, except that half precision on a CPU becomes bf16-mixed
where bf16 is native (fp16 autocast does not exist there; the original's ``trainer.precision=16``)
and 32-true where it is not, each with a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

_logger = logging.getLogger(__name__)

#: forces what the CPU is treated as running natively: fp32, bf16, or auto (detect; the default)
CPU_PRECISION_ENV = "PASST_CPU_PRECISION"
#: the commands whose default differs (module docstring)
COMMANDS = ("train", "evaluate", "infer")

#: every way a precision may be requested, and its Lightning name
_CANONICAL = {
    "auto": "auto", None: "auto",
    "32": "32-true", "32-true": "32-true", "fp32": "32-true",
    "16": "16-mixed", "16-mixed": "16-mixed", "fp16": "16-mixed",
    "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
    "bf16-true": "bf16-true", "16-true": "16-true", "64": "64-true", "64-true": "64-true",
}
_AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check), unless ``PASST_CPU_PRECISION`` says otherwise."""
    forced = os.environ.get(CPU_PRECISION_ENV, "").strip().lower()
    if forced in ("", "auto"):
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    if forced not in ("fp32", "bf16"):
        raise ValueError(f"{CPU_PRECISION_ENV}={forced!r}: expected fp32, bf16 or auto")
    return forced == "bf16"


def device_type(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda"``, ... for a device or a device (type) name; Lightning's ``"gpu"`` is CUDA."""
    if isinstance(device, torch.device):
        return device.type
    kind = str(device).split(":")[0]
    return "cuda" if kind == "gpu" else kind


def fastest_autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on GPUs that support it (Ampere and newer; no loss
    scaling needed), else fp16; bf16 on CPUs with native bf16; None (fp32) elsewhere."""
    kind = device_type(device)
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def canonical_precision(requested: Any) -> str:
    """``requested`` (Lightning's names, ints, or fp32/bf16/fp16) as Lightning's precision name, or "auto"."""
    key = str(requested).strip().lower() if requested is not None else None
    if key not in _CANONICAL:
        names = ", ".join(sorted(k for k in _CANONICAL if k))
        raise ValueError(f"precision={requested!r}: expected one of {names}")
    return _CANONICAL[key]


def decide_precision(device: torch.device | str, requested: Any = "auto", command: str = "train") -> str:
    """The Lightning precision ``command`` runs in on ``device`` when ``requested`` (module docstring)."""
    if command not in COMMANDS:
        raise ValueError(f"command={command!r}: expected one of {COMMANDS}")
    kind = device_type(device)
    precision = canonical_precision(requested)
    if precision == "auto":
        if command == "evaluate":
            return "32-true"
        return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed", None: "32-true"}[fastest_autocast_dtype(kind)]
    if kind != "cpu" or precision not in _AUTOCAST:
        return precision
    if cpu_has_fast_bf16():
        if precision == "16-mixed":
            _logger.warning("precision=%r: fp16 autocast does not exist on the CPU; using 'bf16-mixed' "
                            "(this CPU runs bfloat16 natively).", requested)
            return "bf16-mixed"
        return precision
    _logger.warning("precision=%r: this CPU has no native bfloat16 (no AVX512-BF16/AMX, or %s=fp32), where half "
                    "precision is emulated and hundreds of times slower than fp32; using '32-true'.",
                    requested, CPU_PRECISION_ENV)
    return "32-true"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision name (None: no autocast)."""
    return _AUTOCAST.get(canonical_precision(precision))
