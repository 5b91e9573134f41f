"""How long a checkpoint save holds up the training loop: written in the step loop vs in the background.

A PaSST-S training checkpoint (the network, its SWA copy and the AdamW moments, ~1.4 GB) is saved
with ``helpers.training.checkpoint_io.AtomicCheckpointIO`` into a folder (default: a temporary one):
``--rounds`` + 1 times with ``background=False`` (the loop waits for the whole write, flushed to
the disk), then as many times in the background (the loop waits for the copy into host memory
only; the first save allocates that memory, later ones reuse it).

    python benchmarks/checkpoint_stall.py [--dir /path/on/the/training/disk] [--rounds 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from helpers.training.checkpoint_io import AtomicCheckpointIO
from helpers.training.speed import machine_description
from models.build import get_model


def passt_s_checkpoint(device: str = "cpu") -> dict:
    """A checkpoint shaped like a PaSST-S training run's: net, net_swa, AdamW's two moments per parameter."""
    state = get_model(pretrained=False).to(device).state_dict()
    params = [v for v in state.values() if v.is_floating_point()]
    return {"state_dict": {**{f"net.{k}": v for k, v in state.items()},
                           **{f"net_swa.{k}": v.clone() for k, v in state.items()}},
            "optimizer_states": [{"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                                                "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(params)}}],
            "global_step": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="where the training state lives (cuda: copied to the host)")
    args = parser.parse_args()
    checkpoint = passt_s_checkpoint(args.device)
    size = sum(t.numel() * t.element_size() for part in (checkpoint["state_dict"],) for t in part.values())
    size += sum(t.numel() * t.element_size() for s in checkpoint["optimizer_states"][0]["state"].values()
                for t in s.values())
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "last.ckpt"
        rows: dict[str, tuple[list[float], list[float]]] = {}
        for name, background in (("in the step loop (background=False)", False), ("in the background", True)):
            io = AtomicCheckpointIO(background=background)  # one per run, as in training: later saves reuse memory
            for save in range(args.rounds + 1):
                start = time.perf_counter()
                io.save_checkpoint(checkpoint, path)
                stall = time.perf_counter() - start
                io.wait()
                key = f"{name}, first save" if save == 0 else f"{name}, later saves"
                rows.setdefault(key, ([], []))[0].append(stall)
                rows[key][1].append(time.perf_counter() - start)
        print(f"Machine: {machine_description(args.device)}; checkpoint {size / 2**30:.2f} GiB (PaSST-S, SWA copy, AdamW "
              f"moments) into {folder}; later saves: median of {args.rounds}\n")
        print("| written | training loop waits, s | until on the disk, s |\n|---|---:|---:|")
        for name, (stalls, totals) in rows.items():
            print(f"| {name} | {statistics.median(stalls):.2f} | {statistics.median(totals):.2f} |")


if __name__ == "__main__":
    main()
