"""Tag audio files with PaSST: the strongest classes per file, scores per window, embeddings.

    passt-tag recording.mp3 folder/ [--csv scores.csv] [--json scores.json]
              [--plot scores.png] [--embeddings emb.npy] [--model NAME_OR_CKPT]

(``python inference.py ...`` in the repository runs the same command.)

Any format FFmpeg reads, at any sample rate (resampled to 32 kHz, mixed to mono), any length:
long audio is cut into overlapping windows of the model's clip length (``--hop`` apart, the last
one ending with the audio), and each file gets the mean and the max of its window scores.
Folders are searched recursively for audio files. Files that cannot be decoded are reported by
name, the others are still processed, and the exit status is 1 when any failed.

``--model`` takes any model name of ``models/registry.py`` (a released architecture, its aliases,
the original's short names such as ``passt_s_ap476``, an ensemble named config such as
``ensemble_s10``), or a checkpoint written by training here, ``.ckpt`` or ``.safetensors`` (its
class names and network config travel with it; ``--swa`` takes its SWA weights). A released
model's outputs are named by its label set (AudioSet, FSD50K, OpenMIC), fetched once into the
torch hub cache. A checkpoint is loaded without running
code from it: a file holding more than tensors and plain data is refused unless
``--trust-checkpoint`` is given. See README.md, "Inference: tagging and embedding audio files".
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from helpers.inference import hear, outputs
from helpers.inference.cli import (
    add_debug_argument,
    add_device_arguments,
    add_model_arguments,
    class_names_for,
    model_from_args,
    run_command,
    window_and_hop,
)
from helpers.inference.tagging import ACTIVATIONS, find_audio_files, tag_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per file (default: 5)")
    parser.add_argument("--window", type=float, help="window length in seconds (default: the model's, 10 s for "
                                                     "the released 10 s models)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half the window)")
    parser.add_argument("--activation", choices=ACTIVATIONS,
                        help="sigmoid for multi-label models such as AudioSet's, softmax for single-label (default: "
                             "what the checkpoint's task used, else sigmoid)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    add_device_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="processes decoding audio ahead (default: 2)")
    parser.add_argument("--csv", help="write the scores of every window here")
    parser.add_argument("--json", help="write windows, whole-file mean/max and top-k here")
    parser.add_argument("--plot", help="draw the strongest classes over time into this image (one per file)")
    parser.add_argument("--plot-classes", type=int, default=8, help="classes drawn by --plot (default: 8)")
    parser.add_argument("--embeddings", help="write each file's HEAR scene embedding ([files, D] .npy)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size", "plot_classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = find_audio_files(args.inputs)
    if not files:
        raise FileNotFoundError(f"no audio files found in {' '.join(args.inputs)}")
    if not any(f.exists() for f in files):  # say so before loading (maybe downloading) a model
        raise FileNotFoundError(f"no such file: {', '.join(map(str, files))}")
    model = model_from_args(args).place(args.device, args.precision)
    names = class_names_for(model, args.labels)
    window, hop = window_and_hop(model, args.window, args.hop)
    kind = args.activation or model.activation
    print(f"{model.describe(window, kind)}; hop {hop / model.sample_rate:g} s; {len(files)} file(s)", file=sys.stderr)

    if args.embeddings:
        hear.configure(model, batch_size=args.batch_size)
    table = outputs.WindowCsv(args.csv, names) if args.csv else None
    results = []
    progress = tqdm(tag_files(model, files, window, hop, args.batch_size, kind, args.workers,
                              embed=hear.get_scene_embeddings if args.embeddings else None),
                    total=len(files), unit="file", file=sys.stderr, disable=len(files) < 2)
    try:
        for index, result in enumerate(progress):
            results.append(result)
            progress.write(outputs.summary(result, names, args.top_k), file=sys.stdout)
            if table is not None:
                table.add(result)
            if args.plot and result.ok:
                outputs.plot(outputs.plot_path(args.plot, index, result, len(files) > 1), result, names,
                             args.plot_classes)
    finally:
        if table is not None:
            table.close()
    ok = [r for r in results if r.ok]
    if args.json:
        outputs.write_json(args.json, outputs.to_json(results, names, model.name, args.top_k))
    if args.embeddings:
        listing = outputs.write_embeddings(args.embeddings, results)
        print(f"embeddings of {len(ok)} file(s) in {args.embeddings} (row order: {listing})", file=sys.stderr)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\n{len(failed)} of {len(results)} file(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.path}: {r.error}", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str] | None = None) -> None:
    """The ``passt-tag`` console command (``argv``: default the command line)."""
    run_command(main, argv)
