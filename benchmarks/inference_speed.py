"""Inference throughput: full-length 10 s clips per second through the mel front end and PaSST.

Waveforms of 10 s (32 kHz) go through the front end and the network in eval mode, without
gradients and without patchout (1190 tokens at stride 10, 474 at stride 16), batched. Each
measurement runs in its own process. When the original implementation (``hear21passt``) is
importable it is measured in the same run, interleaved, with the same random weights, and the
speed ratio is printed:

    pip install --no-deps --target /tmp/hear21 hear21passt==0.0.26
    PYTHONPATH=/tmp/hear21 .venv/bin/python benchmarks/inference_speed.py

Precisions: fp32, and bf16 autocast only where the hardware runs it natively (a GPU, or a CPU
with AVX512-BF16/AMX: :func:`models.hardware.fastest_autocast_dtype`); emulated bf16 says nothing.
MFU = forward matmul FLOPs per clip x clips/s over the peak matmul FLOP/s of the same machine and
precision (measured with large square matmuls).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train_speed import machine, run_child  # noqa: E402

from helpers.training.speed import time_steps  # noqa: E402
from models.hardware import fastest_autocast_dtype  # noqa: E402

SETTINGS = {"stride 10": 10, "stride 16": 16}
SR, SECONDS = 32000, 10


def build(impl: str, stride: int) -> torch.nn.Module:
    """Waveforms -> logits: this project's InferenceModel or the original wrapper, same random weights."""
    from compare_original import original_network

    from models.passt import ARCHS

    torch.manual_seed(0)
    ref = original_network(dataclasses.replace(ARCHS["passt_s_swa_p16_128_ap476"], fstride=stride,
                                               tstride=stride)).eval()
    if impl == "original":
        from hear21passt.models.preprocess import AugmentMelSTFT as OriginalMel
        from hear21passt.wrapper import PasstBasicWrapper

        mel = OriginalMel(hopsize=320, fmin_aug_range=10, fmax_aug_range=2000)
        return PasstBasicWrapper(mel=mel, net=ref, mode="logits").eval()
    from helpers.inference.model import InferenceModel
    from models.passt import get_model, load_state_dict_into
    from models.preprocess import AugmentMelSTFT

    net = get_model(pretrained=False, fstride=stride, tstride=stride)
    load_state_dict_into(net, ref.state_dict(), trained_stride=(stride, stride))
    return InferenceModel(net, AugmentMelSTFT()).eval()


def measure(impl: str, setting: str, precision: str, device: str, batch: int, steps: int, warmup: int) -> dict:
    stride = SETTINGS[setting]
    model = build(impl, stride).to(device)
    wave = torch.randn(batch, SR * SECONDS, device=device) * 0.1
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if impl == "ours":
        model.autocast_dtype = dtype if precision == "bf16" else None
    autocast = torch.autocast(device, dtype=dtype, enabled=precision == "bf16" and impl == "original")

    def step():
        with torch.inference_mode(), autocast, contextlib.redirect_stdout(io.StringIO()):
            model(wave)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        time_steps(step, warmup, device)
        elapsed = time_steps(step, steps, device)
    from models.passt import flops_per_example, get_model

    with torch.device("meta"):
        reference = get_model(pretrained=False, fstride=stride, tstride=stride)
    frames = SR * SECONDS // 320 + 1
    return {"clips_per_s": batch * steps / elapsed, "flops_per_clip": flops_per_example(reference, frames, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="clips per forward pass (default: 4 on CPU, 64 on GPU)")
    parser.add_argument("--steps", type=int, help="timed passes (default: 3 on CPU, 20 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--impls", nargs="+", help="ours and/or original (default: both when importable)")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "peak":
            from train_speed import measure_matmul_peak

            print(json.dumps({"flops": measure_matmul_peak(rest[0], rest[1])}))
        else:
            impl, setting, precision, device, batch, steps, warmup = rest
            print(json.dumps(measure(impl, setting, precision, device, int(batch), int(steps), int(warmup))))
        return

    gpu = args.device == "cuda"
    batch, steps = args.batch or (64 if gpu else 4), args.steps or (20 if gpu else 3)
    precisions = ["fp32"] + (["bf16"] if fastest_autocast_dtype(args.device) == torch.bfloat16 else [])
    impls = args.impls
    if impls is None:
        try:
            import hear21passt  # noqa: F401

            impls = ["ours", "original"]
        except ImportError:
            impls = ["ours"]
    print(f"Machine: {machine(args.device)}; {SECONDS} s clips, batch {batch}, {steps} timed passes after "
          f"{args.warmup} warm-up; precisions: {', '.join(precisions)} (bf16 only where native)\n", flush=True)
    peaks = {p: run_child(["peak", p, args.device], script=__file__)["flops"] for p in precisions}
    for p, flops in peaks.items():
        print(f"matmul peak {p}: {flops / 1e9:.0f} GFLOP/s", flush=True)
    header = "| setting | precision | " + " | ".join(f"{i} clips/s | {i} MFU" for i in impls)
    header += " | speed-up |" if len(impls) == 2 else " |"
    print("\n" + header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for setting in args.settings:
        for precision in precisions:
            results = {impl: run_child(["infer", impl, setting, precision, args.device, str(batch), str(steps),
                                        str(args.warmup)], script=__file__) for impl in impls}
            cells = [f"{r['clips_per_s']:.2f} | {r['clips_per_s'] * r['flops_per_clip'] / peaks[precision]:.0%}"
                     for r in results.values()]
            row = f"| {setting} | {precision} | " + " | ".join(cells)
            if len(results) == 2:
                row += f" | {results['ours']['clips_per_s'] / results['original']['clips_per_s']:.2f}x"
            print(row + " |", flush=True)


if __name__ == "__main__":
    main()
