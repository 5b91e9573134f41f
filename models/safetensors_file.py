"""Weights in the safetensors format: tensors and JSON text, nothing that could run code when read.

A file written by :func:`write_safetensors` holds a state dict and, as JSON in its metadata
(key ``"passt"``), the record that this framework's ``.ckpt`` files carry under ``"passt"``: the
``models`` config that rebuilds the network and the class names of its outputs. Every loader of
this framework reads it as it reads a ``.ckpt`` (:func:`models.checkpoints.read_checkpoint`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

#: the metadata key holding the record (``experiment``, ``models``, ``class_names``) as JSON
RECORD_KEY = "passt"


def write_safetensors(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                      record: Mapping[str, Any] | None = None) -> Path:
    """Write ``state_dict`` and ``record`` to ``path`` (``.safetensors``); returns the path.

    Args:
        state_dict: the network's own state dict, or a training module's (``net.`` weights and
            the SWA average under ``net_swa.``: loaders then choose with ``swa``).
        record: what a checkpoint of this framework holds under ``"passt"``: ``models`` (the
            ``models`` config that rebuilds the network), ``class_names`` (a name per output, or
            None) and ``experiment``. It must be JSON data. None: the file holds weights only
            (loaders then need the architecture: ``--arch``).

    The file is written next to ``path`` and renamed into place: it is complete or absent.
    """
    path = Path(path)
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        # own contiguous CPU memory: safetensors refuses tensors that share storage
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    metadata = {"format": "pt"}
    if record is not None:
        try:
            metadata[RECORD_KEY] = json.dumps(dict(record))
        except TypeError as err:
            raise TypeError(f"the record must be JSON data (plain dicts, lists, strings, numbers): {err}") from None
    data = safetensors_bytes(tensors, metadata)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (an 8-byte header size, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:9] == b"{"
            and 0 < int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8)


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """``{"state_dict": tensors}``, plus ``"passt": record`` when the file has one.

    Raises ``ValueError`` when the file is damaged or its record is not JSON.
    """
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as err:
        raise ValueError(str(err)) from None
    checkpoint: dict[str, Any] = {"state_dict": tensors}
    if RECORD_KEY in metadata:
        try:
            checkpoint[RECORD_KEY] = json.loads(metadata[RECORD_KEY])
        except json.JSONDecodeError as err:
            raise ValueError(f"its {RECORD_KEY!r} metadata is not JSON ({err})") from None
    return checkpoint
