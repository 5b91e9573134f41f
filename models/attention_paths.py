"""Which attention path is faster where: the lookup in ``models/attention_paths.json``.

The table holds the measured speed of fused scaled-dot-product attention and of the explicit
softmax path per device, precision and sequence length, written by
``benchmarks/attention_paths.py --record`` (each entry naming its machine).
:class:`models.passt.PaSSTAttention` asks :func:`fused_attention_is_faster` at every call.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

#: measured speed of the two attention paths per device, precision and sequence length
ATTENTION_TABLE_PATH = Path(__file__).with_name("attention_paths.json")


@functools.cache
def _attention_table() -> dict:
    return json.loads(ATTENTION_TABLE_PATH.read_text())


@functools.lru_cache(maxsize=512)
def fused_attention_is_faster(device_type: str, dtype: torch.dtype, tokens: int, training: bool) -> bool:
    """Whether fused scaled-dot-product attention was measured faster than the explicit softmax path.

    Looks up :data:`ATTENTION_TABLE_PATH` for the device and precision, at the measured sequence
    length nearest to ``tokens`` (by ratio), timed forward-only (inference) or forward + backward
    (``training``, also used for inference when only that was measured). Combinations never
    measured use the fused kernel, PyTorch's default.
    """
    entries = _attention_table().get(device_type, {})
    entry = entries.get(str(dtype).removeprefix("torch."))
    if entry is not None and "same_as" in entry:
        entry = entries[entry["same_as"]]
    if entry is None:
        return True
    row = min(entry["rows"], key=lambda r: 0.0 if r["tokens"] is None else abs(math.log(r["tokens"] / tokens)))
    timing = row.get("training" if training else "inference") or row["training"]
    return timing["fused_ms"] <= timing["explicit_ms"]
