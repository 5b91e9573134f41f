"""Peak memory and time of a PaSST-S training step on 30 s clips (3000 frames), with and without
gradient checkpointing (``models.net.grad_checkpointing``).

One training step = the bare step of ``helpers.training.speed.training_step``: forward, BCE loss,
backward, fused AdamW step. Each measurement runs in its own process so that its peak is its own:

* CPU: the process's peak resident memory (``ru_maxrss``). ``held`` is the resident memory after
  one step on a short clip (weights, gradients, AdamW moments, allocator pools, libraries): what a
  process holds between steps. ``step`` = peak - held: what the 30 s step needs on top of it
  (activations kept for the backward pass and temporaries).
* GPU: ``torch.cuda.max_memory_allocated`` (tensors only) in the same two parts.

The time is the wall time of that one measured step (compute per step grows with the recomputed
forward pass).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import torch
from train_speed import run_child

from helpers.training.speed import machine_description, synchronize, training_step
from helpers.training.tasks import MultiLabelTask

FRAMES = 3000  # 30 s at hop 320
TINY = dict(depth=2, embed_dim=96, num_heads=2)  # --tiny: checks the script runs (gpu_check.sh --dry)
SETTINGS = {
    "no patchout": {},
    "s_t=40, s_f=4": dict(s_patchout_t=40, s_patchout_f=4),
}


def resident_mb() -> float:
    """Current resident memory of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(setting: str, precision: str, checkpointed: bool, batch: int, device: str, tiny: bool = False) -> dict:
    """Held and step memory (MB) and the step's seconds of one configuration (see the module doc)."""
    from helpers.training.optim import make_optimizer
    from models.build import get_model

    torch.manual_seed(0)
    model = get_model(pretrained=False, input_tdim=FRAMES, grad_checkpointing=checkpointed,
                      **SETTINGS[setting], **(TINY if tiny else {})).to(device).train()
    optimizer = make_optimizer(model.parameters(), lr=1e-5)
    targets = (torch.rand(batch, 527, device=device) < 0.05).float()
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(frames: int) -> None:
        spectrograms = torch.randn(batch, 1, 128, frames, device=device)
        training_step(model, spectrograms, targets, MultiLabelTask().loss, optimizer, dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step(500)  # gradients, AdamW moments, kernel set-up on a short clip (patchout still fits)
        synchronize(device)
        if device == "cuda":
            held = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            held = resident_mb()
        start = time.perf_counter()
        step(FRAMES)
        synchronize(device)
        seconds = time.perf_counter() - start
    peak = peak_mb(device)
    return {"held_mb": held, "step_mb": peak - held, "peak_mb": peak, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="30 s spectrograms per step (default: 2 on CPU, 32 on GPU)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--tiny", action="store_true", help="a 2-block network of width 96 instead of PaSST-S")
    args = parser.parse_args()

    if args.child:
        setting, precision, checkpointed, batch, device, tiny = args.child
        print(json.dumps(measure(setting, precision, checkpointed == "1", int(batch), device, tiny == "1")))
        return

    batch = args.batch or (32 if args.device == "cuda" else 2)
    what = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    network = "tiny PaSST" if args.tiny else "PaSST-S"
    print(f"Machine: {machine_description(args.device)}; {network}, {FRAMES} frames, batch {batch}; "
          f"memory: {what}, one process per row\n", flush=True)
    print("| setting | precision | grad checkpointing | held MB | step MB | peak MB | step s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for setting in args.settings:
        for precision in args.precisions:
            rows = {}
            for checkpointed in (False, True):
                r = run_child([setting, precision, str(int(checkpointed)), str(batch), args.device,
                               str(int(args.tiny))], script=__file__)
                rows[checkpointed] = r
                print(f"| {setting} | {precision} | {'on' if checkpointed else 'off'} | {r['held_mb']:.0f} | "
                      f"{r['step_mb']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |", flush=True)
            off, on = rows[False], rows[True]
            print(f"|  |  | saves | | {1 - on['step_mb'] / off['step_mb']:.0%} of the step | "
                  f"{1 - on['peak_mb'] / off['peak_mb']:.0%} | {on['seconds'] / off['seconds'] - 1:+.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
