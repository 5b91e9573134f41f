"""How long the web demo takes for a 10 s clip on this machine, and how much of it is the model.

PaSST-S (stride 10) with random weights behind the demo's handler (``app.Demo.analyse``: decode
the file, tag its one 10 s window, write the CSV and JSON downloads), against the network's
forward pass alone on the same waveform; best of ``--turns``, in turns. The page itself adds the
upload and one round trip on localhost (milliseconds). Precisions: fp32, and ``auto`` where that
is bf16 (a CPU with native bf16).

    .venv/bin/python benchmarks/demo_latency.py [--turns 3] [--embedding]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpers.training.speed import machine_description
from models.precision import fastest_autocast_dtype

SR, SECONDS = 32000, 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3, help="turns of each measurement; the best counts")
    parser.add_argument("--embedding", action="store_true", help="also compute the embedding (one more pass)")
    args = parser.parse_args(argv)

    from audioset.synthetic import write_audio_file
    from helpers.inference.model import InferenceModel
    from helpers.inference.tagging import tag_waveform
    from helpers.inference.web_demo import Demo
    from models.build import get_model
    from models.preprocess import AugmentMelSTFT

    torch.manual_seed(0)
    model = InferenceModel(get_model(pretrained=False), AugmentMelSTFT(), name="PaSST-S, random weights")
    precisions = ["fp32"] + (["bf16"] if fastest_autocast_dtype("cpu") == torch.bfloat16 else [])
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        wave = (0.1 * np.random.default_rng(0).standard_normal(SR * SECONDS)).astype(np.float32)
        clip = write_audio_file(Path(tmp) / "clip.wav", wave, SR)
        demo = Demo(model, [f"class {i}" for i in range(model.n_classes)], work_dir=Path(tmp) / "work")
        for precision in precisions:
            model.place("cpu", precision)
            demo.analyse(str(clip), embedding=args.embedding)  # warm-up
            for _ in range(args.turns):
                start = time.perf_counter()
                result = demo.analyse(str(clip), embedding=args.embedding)
                page = time.perf_counter() - start
                start = time.perf_counter()
                tag_waveform(model, wave)
                forward = time.perf_counter() - start
                for key, value in ((("page", precision), page), (("forward", precision), forward)):
                    best[key] = min(best.get(key, float("inf")), value)
            assert result.top, result.status

    print(f"machine: {machine_description('cpu')}; {model.name}; a {SECONDS} s clip "
          f"({'with' if args.embedding else 'without'} the embedding); best of {args.turns} turns")
    print("\n| precision | demo handler, s | forward pass alone, s | overhead, s |")
    print("|---|---:|---:|---:|")
    for precision in precisions:
        page, forward = best["page", precision], best["forward", precision]
        print(f"| {precision} | {page:.2f} | {forward:.2f} | {page - forward:.2f} |")


if __name__ == "__main__":
    main()
