"""Export a PaSST model as files that run without this framework: ONNX and torch.export (.pt2).

    passt-export --model NAME_OR_CKPT [--out-dir exported] [--name NAME] [--formats onnx,pt2]

(``python export.py ...`` in the repository runs the same command.) ``--model`` takes what
``passt-tag`` takes: a released architecture or alias, a short name, an ensemble named config, or
a checkpoint trained here (its class names travel with it; ``--swa``, ``--arch``, ``--labels`` as
in ``passt-tag``). Written into ``--out-dir``:

* ``NAME.onnx``: waveforms ``[batch, samples]`` (float32, mono, 32 kHz) to ``logits`` and
  ``embedding``, the mel front end included; dynamic batch and length (opset 18, onnxruntime on
  CPU and GPU);
* ``NAME.pt2``: the same graph as a ``torch.export`` program (``torch.export.load(path).module()``);
* ``NAME.safetensors``: the weights with the config that rebuilds the model and its class names
  (for this framework: ``passt-tag --model NAME.safetensors``, fine-tuning, evaluation; it cannot
  carry code);
* ``NAME.json``: the class names, the sample rate, the shortest and longest input, the outputs.

Afterwards the exported files are run on a 10 s clip and compared with this framework's own
output (``--no-check`` skips it). See README.md, "Exporting a model".
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from helpers.inference.cli import (
    add_debug_argument,
    add_model_arguments,
    class_names_for,
    model_from_args,
    run_command,
)
from helpers.inference.export import FORMATS, export_model, length_limits
from helpers.inference.model import load_checkpoint
from helpers.inference.tagging import ACTIVATIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--activation", choices=ACTIVATIONS,
                        help="recorded in NAME.json for callers: sigmoid (multi-label) or softmax (default: what the "
                             "checkpoint's task used, else sigmoid)")
    parser.add_argument("--out-dir", type=Path, default=Path("exported"), help="folder to write into (default: exported)")
    parser.add_argument("--name", help="file name stem (default: the model's name or the checkpoint's stem)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)}")
    parser.add_argument("--no-check", action="store_true", help="do not run the exported files afterwards")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def check(paths: dict[str, Path], model, seconds: float = 10.0) -> dict[str, float]:
    """Largest absolute logit difference of each exported file from ``model`` (fp32) on random audio."""
    _, longest = length_limits(model)
    wave = torch.randn(1, min(round(seconds * model.sample_rate), longest), generator=torch.Generator().manual_seed(0))
    wave = (0.1 * wave).clamp(-1, 1)
    with torch.no_grad():
        expected = model(wave)[0].numpy()
    worst = {}
    if "onnx" in paths:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        worst["onnx"] = float(np.abs(session.run(["logits"], {"waveform": wave.numpy()})[0] - expected).max())
    if "pt2" in paths:
        with torch.no_grad():
            logits = torch.export.load(paths["pt2"]).module()(wave)[0].numpy()
        worst["pt2"] = float(np.abs(logits - expected).max())
    if "safetensors" in paths:
        with torch.no_grad():
            logits = load_checkpoint(paths["safetensors"]).place("cpu", "fp32")(wave)[0].numpy()
        worst["safetensors"] = float(np.abs(logits - expected).max())
    return worst


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    model = model_from_args(args).place("cpu", "fp32")  # exported graphs are fp32
    names = class_names_for(model, args.labels)
    name = args.name or (Path(args.model).stem if Path(args.model).is_file() else args.model)
    print(f"{model.describe()}; exporting {', '.join(formats)} to {args.out_dir}", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress lines: stdout lists the files
        paths = export_model(model, names, args.out_dir, name, formats, source=args.model,
                             activation=args.activation or model.activation)
    for path in paths.values():
        print(path)
    if not args.no_check:
        for fmt, diff in check(paths, model).items():
            print(f"{fmt}: max |logit difference| from this framework on a 10 s clip: {diff:.2e}", file=sys.stderr)
    return 0


def run(argv: list[str] | None = None) -> None:
    """The ``passt-export`` console command (``argv``: default the command line)."""
    run_command(main, argv)
