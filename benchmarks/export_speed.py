"""Exported vs framework inference speed on this machine: onnxruntime and the torch.export program
against PyTorch eager (``InferenceModel``), 10 s clips (32 kHz waveforms) in, logits out.

PaSST-S (stride 10, 1190 tokens) with random weights, exported by ``helpers.inference.export``
(the files ``export.py`` writes), then the runners take turns in one process (each runs a batch,
then the next, ...) so all see the same load, and the best turn of each counts:

* ``pytorch fp32``: ``InferenceModel`` in eval mode, no gradients (what ``inference.py`` runs);
* ``pytorch bf16``: the same with bf16 autocast, only where the CPU runs bf16 natively;
* ``torch.export .pt2 fp32``: the exported program, loaded back;
* ``onnxruntime fp32``: the ONNX file on the CPU execution provider, as many threads as torch.

Also printed: the largest logit difference of each exported runner from PyTorch fp32.

    .venv/bin/python benchmarks/export_speed.py [--batch 1] [--turns 3] [--stride 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpers.training.speed import machine_description
from models.precision import fastest_autocast_dtype

SR, SECONDS = 32000, 10


def runners(model, paths: dict[str, Path]) -> dict:
    """Name -> function from a waveform batch (torch) to logits (NumPy)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
    program = torch.export.load(paths["pt2"]).module()

    def eager(dtype):
        def run(wave):
            model.autocast_dtype = dtype
            with torch.inference_mode():
                return model(wave)[0].numpy()
        return run

    def exported(wave):
        with torch.inference_mode():
            return program(wave)[0].numpy()

    out = {"pytorch fp32": eager(None)}
    if fastest_autocast_dtype("cpu") == torch.bfloat16:
        out["pytorch bf16"] = eager(torch.bfloat16)
    out["torch.export .pt2 fp32"] = exported
    out["onnxruntime fp32"] = lambda wave: session.run(["logits"], {"waveform": wave.numpy()})[0]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="clips per call (default: 1)")
    parser.add_argument("--turns", type=int, default=3, help="turns of every runner; the best counts (default: 3)")
    parser.add_argument("--stride", type=int, default=10, help="patch stride (10: PaSST-S; 16: no overlap)")
    args = parser.parse_args(argv)

    from helpers.inference.export import export_model
    from helpers.inference.model import InferenceModel
    from models.build import get_model
    from models.preprocess import AugmentMelSTFT

    torch.manual_seed(0)
    net = get_model(pretrained=False, fstride=args.stride, tstride=args.stride)
    model = InferenceModel(net, AugmentMelSTFT(), name=f"PaSST-S stride {args.stride}, random weights").place("cpu", "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            paths = export_model(model, [f"class {i}" for i in range(model.n_classes)], tmp, "passt_s")
        export_s = time.perf_counter() - start
        sizes = {k: p.stat().st_size / 2**20 for k, p in paths.items() if k != "json"}
        run = runners(model, paths)
        wave = 0.1 * torch.randn(args.batch, SR * SECONDS, generator=torch.Generator().manual_seed(1))
        reference = run["pytorch fp32"](wave)
        differences = {name: float(np.abs(f(wave) - reference).max()) for name, f in run.items()}  # also a warm-up
        best = dict.fromkeys(run, float("inf"))
        for _ in range(args.turns):
            for name, f in run.items():
                start = time.perf_counter()
                f(wave)
                best[name] = min(best[name], time.perf_counter() - start)

    print(f"machine: {machine_description('cpu')}; onnxruntime "
          f"{__import__('onnxruntime').__version__}; {model.name}; batch {args.batch} x {SECONDS} s; "
          f"best of {args.turns} turns")
    print(f"export (torch.export + ONNX): {export_s:.0f} s; files: "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in sizes.items()))
    print("\n| runner | s per batch | clips/s | vs pytorch fp32 | max abs logit difference from pytorch fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {args.batch / seconds:.3f} | {best['pytorch fp32'] / seconds:.2f}x "
              f"| {differences[name]:.1e} |")


if __name__ == "__main__":
    main()
