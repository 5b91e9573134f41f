"""Training throughput, peak memory and model FLOP utilisation of PaSST-S at 998 frames.

One training step = forward, BCE loss, backward, AdamW step. Each measurement runs in its own
process so its peak memory is its own. Settings: no patchout, structured patchout (s_t=40,
s_f=4), unstructured patchout (u=400) and stride 16; fp32, bf16 autocast and (``--precisions fp16``)
fp16 autocast with loss scaling; on the CPU, and on
the GPU when one is found. When the original implementation (``hear21passt``) is importable it
is measured in the same run, interleaved with this one, and the speed ratio is printed:

    pip install --no-deps --target /tmp/hear21 hear21passt==0.0.26
    PYTHONPATH=/tmp/hear21 .venv/bin/python benchmarks/train_speed.py

Model FLOP utilisation (MFU) = achieved FLOP/s (3x the forward matmul FLOPs per spectrogram,
times spectrograms/s) over the peak matmul FLOP/s of the same machine and precision, which the
script measures with large square matmuls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import warnings

import torch

from helpers.training.speed import machine_description, time_steps, training_step
from helpers.training.tasks import MultiLabelTask

SETTINGS = {
    "no patchout": dict(fstride=10, tstride=10),
    "s_t=40, s_f=4": dict(fstride=10, tstride=10, s_patchout_t=40, s_patchout_f=4),
    "u=400": dict(fstride=10, tstride=10, u_patchout=400),
    "stride 16": dict(fstride=16, tstride=16),
}
FRAMES = 998


def build(impl: str, setting: dict) -> torch.nn.Module:
    """PaSST-S with random weights from this project or from the original package."""
    if impl == "ours":
        from models.build import get_model

        return get_model(pretrained=False, **setting)
    from hear21passt.models.passt import PaSST as OriginalPaSST

    kwargs = {k: v for k, v in setting.items() if k not in ("fstride", "tstride")}
    with contextlib.redirect_stdout(io.StringIO()):
        return OriginalPaSST(img_size=(128, FRAMES), stride=(setting["fstride"], setting["tstride"]),
                             patch_size=16, in_chans=1, num_classes=527, embed_dim=768, depth=12,
                             num_heads=12, distilled=True, **kwargs)


#: autocast dtypes of the half precisions
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_training_optimizer(impl: str, model: torch.nn.Module, same_optimizer: bool) -> torch.optim.Optimizer:
    """Each framework's optimizer: this one's (fused AdamW), the original's default AdamW."""
    if impl == "ours" and not same_optimizer:
        from helpers.training.optim import make_optimizer

        return make_optimizer(model.parameters(), lr=1e-5)
    return torch.optim.AdamW(model.parameters(), lr=1e-5)


def measure_training(impl: str, setting_name: str, precision: str, device: str, batch: int, steps: int,
                     same_optimizer: bool = False, warmup: int = 2) -> dict:
    """Spectrograms/s and peak memory of ``steps`` timed training steps after ``warmup`` untimed ones.

    One warm-up step is not enough on the CPU: the second step still creates oneDNN primitives
    (measured: 1.0-1.8 s forward passes before settling at 0.6 s for PaSST-S in bf16).
    """
    torch.manual_seed(0)
    model = build(impl, SETTINGS[setting_name]).to(device).train()
    optimizer = make_training_optimizer(impl, model, same_optimizer)
    spectrograms = torch.randn(batch, 1, 128, FRAMES, device=device)
    targets = (torch.rand(batch, 527, device=device) < 0.05).float()
    dtype = HALF.get(precision)
    scaler = torch.amp.GradScaler(device) if precision == "fp16" else None  # fp16 needs loss scaling, as 16-mixed

    def quiet_forward(x):  # the original prints shapes in its forward
        with contextlib.redirect_stdout(io.StringIO()):
            return model(x)

    def step():
        training_step(quiet_forward, spectrograms, targets, MultiLabelTask().loss, optimizer, dtype, scaler)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        time_steps(step, warmup, device)  # allocations, kernel selection
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elapsed = time_steps(step, steps, device)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    from models.build import get_model
    from models.passt import flops_per_example

    with torch.device("meta"):
        reference = get_model(pretrained=False, **SETTINGS[setting_name])
    return {"specs_per_s": batch * steps / elapsed, "peak_mb": peak_mb,
            "train_flops_per_spec": 3 * flops_per_example(reference, FRAMES, training=True)}


def measure_matmul_peak(precision: str, device: str, n: int = 4096, reps: int = 10) -> float:
    """Best FLOP/s of an ``n x n`` matmul in ``precision`` on ``device``."""
    dtype = HALF.get(precision, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps):
        best = max(best, 2 * n**3 / time_steps(lambda: a @ b, 1, device))
    return best


def available_impls() -> list[str]:
    """This project, and the original when ``hear21passt`` is importable (a scratch install)."""
    try:
        import hear21passt  # noqa: F401
    except ImportError:
        return ["ours"]
    return ["ours", "original"]


def run_child(args: list[str], script: str = __file__) -> dict:
    """Run ``script --child args`` in a fresh process; its last output line is the JSON result."""
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise RuntimeError(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="spectrograms per step (default: 4 on CPU, 64 on GPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 on CPU, 20 on GPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default: 2)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="fp16: autocast with loss scaling (GPUs; emulated, slow, on most CPUs)")
    parser.add_argument("--impls", nargs="+", help="ours and/or original (default: both when importable)")
    parser.add_argument("--same-optimizer", action="store_true",
                        help="use the original's (foreach) AdamW for both, to compare the networks alone")
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "peak":
            result = {"flops": measure_matmul_peak(rest[0], rest[1])}
        else:
            impl, setting, precision, device, batch, steps, same, warmup = rest
            result = measure_training(impl, setting, precision, device, int(batch), int(steps), same == "1",
                                      int(warmup))
        print(json.dumps(result))
        return

    gpu = args.device == "cuda"
    batch = args.batch or (64 if gpu else 4)
    steps = args.steps or (20 if gpu else 3)
    impls = args.impls or available_impls()
    optimizers = "AdamW foreach for both" if args.same_optimizer else "AdamW fused here, foreach in the original"
    print(f"Machine: {machine_description(args.device)}; batch {batch}, {steps} timed steps after {args.warmup} warm-up; "
          f"{optimizers}\n", flush=True)
    peaks = {p: run_child(["peak", p, args.device])["flops"] for p in args.precisions}
    for p, flops in peaks.items():
        print(f"matmul peak {p}: {flops / 1e9:.0f} GFLOP/s", flush=True)
    header = "| setting | precision | " + " | ".join(
        f"{impl} specs/s | {impl} MFU | {impl} peak MB" for impl in impls)
    if "original" in impls and "ours" in impls:
        header += " | speed-up |"
    else:
        header += " |"
    print("\n" + header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for setting in args.settings:
        for precision in args.precisions:
            results = {impl: run_child(["train", impl, setting, precision, args.device, str(batch), str(steps),
                                        str(int(args.same_optimizer)), str(args.warmup)])
                       for impl in impls}
            cells = []
            for impl in impls:
                r = results[impl]
                mfu = r["specs_per_s"] * r["train_flops_per_spec"] / peaks[precision]
                cells.append(f"{r['specs_per_s']:.2f} | {mfu:.0%} | {r['peak_mb']:.0f}")
            row = f"| {setting} | {precision} | " + " | ".join(cells)
            if len(results) == 2:
                row += f" | {results['ours']['specs_per_s'] / results['original']['specs_per_s']:.2f}x"
            print(row + " |", flush=True)


if __name__ == "__main__":
    main()
