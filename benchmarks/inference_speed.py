"""Inference throughput: full-length 10 s clips per second through the mel front end and PaSST.

Waveforms of 10 s (32 kHz) go through the front end and the network in eval mode, without
gradients and without patchout (1190 tokens at stride 10, 474 at stride 16), batched. Each
setting runs in its own process, where the implementations and a peak matmul take turns (so all
see the same load) and the best turn of each counts (on shared cores the least disturbed one). When the original implementation (``hear21passt``) is
importable it is measured in the same run, interleaved, with the same random weights, and the
speed ratio is printed:

    pip install --no-deps --target /tmp/hear21 hear21passt==0.0.26
    PYTHONPATH=/tmp/hear21 .venv/bin/python benchmarks/inference_speed.py

Precisions: fp32, and bf16 autocast only where the hardware runs it natively (a GPU, or a CPU
with AVX512-BF16/AMX: :func:`models.precision.fastest_autocast_dtype`); emulated bf16 says nothing.
MFU = forward matmul FLOPs per clip x clips/s over the peak matmul FLOP/s of the same machine and
precision (a 4096 x 4096 matmul, timed in the same turns).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import warnings

import torch
from train_speed import available_impls, run_child

from helpers.training.speed import machine_description, time_steps
from models.precision import fastest_autocast_dtype

SETTINGS = {"stride 10": 10, "stride 16": 16}
SR, SECONDS = 32000, 10


def build(impl: str, stride: int, original_importable: bool) -> torch.nn.Module:
    """Waveforms -> logits: this project's InferenceModel or the original wrapper, with the same
    random weights when both are measured (the original's, copied into ours)."""
    from helpers.inference.model import InferenceModel
    from models.build import get_model
    from models.passt_weights import load_state_dict_into
    from models.preprocess import AugmentMelSTFT
    from models.registry import ARCHS

    torch.manual_seed(0)
    if not original_importable:  # ours alone: its own random weights
        return InferenceModel(get_model(pretrained=False, fstride=stride, tstride=stride), AugmentMelSTFT()).eval()
    from compare_original import original_network

    ref = original_network(dataclasses.replace(ARCHS["passt_s_swa_p16_128_ap476"], fstride=stride,
                                               tstride=stride)).eval()
    if impl == "original":
        from hear21passt.models.preprocess import AugmentMelSTFT as OriginalMel
        from hear21passt.wrapper import PasstBasicWrapper

        mel = OriginalMel(hopsize=320, fmin_aug_range=10, fmax_aug_range=2000)
        return PasstBasicWrapper(mel=mel, net=ref, mode="logits").eval()
    net = get_model(pretrained=False, fstride=stride, tstride=stride)
    load_state_dict_into(net, ref.state_dict(), trained_stride=(stride, stride))
    return InferenceModel(net, AugmentMelSTFT()).eval()


def measure(impls: list[str], setting: str, precision: str, device: str, batch: int, steps: int,
            warmup: int) -> dict:
    """Best clips/s of each implementation and the best matmul FLOP/s, measured in turns in one process
    (pass of one, pass of the other, a peak matmul, ...) so all see the same load."""
    stride = SETTINGS[setting]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    wave = torch.randn(batch, SR * SECONDS, device=device) * 0.1
    steps_of = {}
    for impl in impls:
        model = build(impl, stride, "original" in available_impls()).to(device)
        if impl == "ours":
            model.autocast_dtype = dtype if precision == "bf16" else None
        autocast = torch.autocast(device, dtype=dtype, enabled=precision == "bf16" and impl == "original")

        def step(model=model, autocast=autocast):
            with torch.inference_mode(), autocast, contextlib.redirect_stdout(io.StringIO()):
                model(wave)
        steps_of[impl] = step
    n = 4096
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    steps_of["peak"] = lambda: a @ b
    best = {name: float("inf") for name in steps_of}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in steps_of.values():
            time_steps(step, warmup, device)
        for _ in range(steps):
            for name, step in steps_of.items():
                best[name] = min(best[name], time_steps(step, 1, device))
    from models.build import get_model
    from models.passt import flops_per_example

    with torch.device("meta"):
        reference = get_model(pretrained=False, fstride=stride, tstride=stride)
    frames = SR * SECONDS // 320 + 1
    return {"clips_per_s": {impl: batch / best[impl] for impl in impls}, "peak_flops": 2 * n**3 / best["peak"],
            "flops_per_clip": flops_per_example(reference, frames, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="clips per forward pass (default: 4 on CPU, 64 on GPU)")
    parser.add_argument("--steps", type=int, help="timed turns (default: 3 on CPU, 20 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--impls", nargs="+", help="ours and/or original (default: both when importable)")
    args = parser.parse_args()
    if args.child:
        impls, setting, precision, device, batch, steps, warmup = args.child
        print(json.dumps(measure(impls.split(","), setting, precision, device, int(batch), int(steps), int(warmup))))
        return

    gpu = args.device == "cuda"
    batch, steps = args.batch or (64 if gpu else 4), args.steps or (20 if gpu else 3)
    precisions = ["fp32"] + (["bf16"] if fastest_autocast_dtype(args.device) == torch.bfloat16 else [])
    impls = args.impls or available_impls()
    print(f"Machine: {machine_description(args.device)}; {SECONDS} s clips, batch {batch}, best of {steps} turns after "
          f"{args.warmup} warm-up passes; precisions: {', '.join(precisions)} (bf16 only where native)\n", flush=True)
    header = "| setting | precision | matmul peak GFLOP/s | " + " | ".join(f"{i} clips/s | {i} MFU" for i in impls)
    header += " | speed-up |" if len(impls) == 2 else " |"
    print(header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for setting in args.settings:
        for precision in precisions:
            r = run_child([",".join(impls), setting, precision, args.device, str(batch), str(steps), str(args.warmup)],
                          script=__file__)
            speed, peak = r["clips_per_s"], r["peak_flops"]
            cells = [f"{speed[i]:.2f} | {speed[i] * r['flops_per_clip'] / peak:.0%}" for i in impls]
            row = f"| {setting} | {precision} | {peak / 1e9:.0f} | " + " | ".join(cells)
            if len(impls) == 2:
                row += f" | {speed['ours'] / speed['original']:.2f}x"
            print(row + " |", flush=True)


if __name__ == "__main__":
    main()
