"""Tiny PaSST checkpoints in this framework's format (the ``passt`` record with the ``models`` config
and the class names, as training writes it), with random weights, for the demo and export tests."""

from __future__ import annotations

from pathlib import Path

import torch

from models.build import get_model

TINY_NET = dict(depth=1, embed_dim=32, num_heads=2)


def write_tiny_checkpoint(path: Path, class_names: list[str], input_tdim: int = 998, seed: int = 0,
                          strides: tuple[int, ...] = (10,)) -> Path:
    """A checkpoint of a tiny PaSST (one stride) or an ensemble of tiny PaSSTs (several strides)
    whose time encodings cover ``input_tdim`` frames (998: 10 s clips)."""
    torch.manual_seed(seed)
    n = len(class_names)
    net = {"arch": "passt_s_swa_p16_128_ap476", "pretrained": False, "n_classes": n, "fstride": strides[0],
           "tstride": strides[0], "input_fdim": 128, "input_tdim": input_tdim, **TINY_NET}
    members = [get_model(pretrained=False, n_classes=n, fstride=s, tstride=s, input_tdim=input_tdim, **TINY_NET)
               for s in strides]
    if len(strides) == 1:
        state, ensemble = members[0].state_dict(), []
    else:
        state = {f"models.{i}.{k}": v for i, m in enumerate(members) for k, v in m.state_dict().items()}
        ensemble = [{"arch": net["arch"], "fstride": s, "tstride": s} for s in strides]
    models = {"net": net, "mel": {"n_mels": 128, "hopsize": 320}, "ensemble": ensemble,
              "checkpoint": None, "checkpoint_swa": False}
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()},
                "passt": {"experiment": "tests", "models": models, "class_names": list(class_names)}}, path)
    return path
