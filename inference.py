"""Tag audio files with PaSST: the strongest classes per file, scores per window, embeddings.

    python inference.py recording.mp3 folder/ [--csv scores.csv] [--json scores.json]
                        [--plot scores.png] [--embeddings emb.npy] [--model NAME_OR_CKPT]

Any format FFmpeg reads, at any sample rate (resampled to 32 kHz, mixed to mono), any length:
long audio is cut into overlapping windows of the model's clip length (``--hop`` apart, the last
one ending with the audio), and each file gets the mean and the max of its window scores.
Folders are searched recursively for audio files. Files that cannot be decoded are reported by
name, the others are still processed, and the exit status is 1 when any failed.

``--model`` takes a released architecture (``models.passt.ARCHS``, its aliases, or the original's
short names such as ``passt_s_ap476``), an ensemble named config (``ensemble_s10``, ...), or a
checkpoint written by training here, ``.ckpt`` or ``.safetensors`` (its class names and network
config travel with it; ``--swa`` takes its SWA weights). A checkpoint is loaded without running
code from it: a file holding more than tensors and plain data is refused unless
``--trust-checkpoint`` is given. See README.md, "Inference: tagging and embedding audio files".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from audioset.prepare_scripts.labels import ensure_labels_csv, read_display_names
from helpers.inference import hear, outputs
from helpers.inference.model import InferenceModel, load_checkpoint, load_ensemble, load_released
from helpers.inference.tagging import ACTIVATIONS, find_audio_files, tag_files
from models.checkpoints import CheckpointError
from models.registry import ENSEMBLES, SHORT_NAMES

DEFAULT_MODEL = "passt_s_kd_p16_128_ap486"  # the best single released AudioSet model (mAP .486)
AUDIOSET_CLASSES = 527


def load_model(spec: str, swa: bool = False, arch: str | None = None, trust_checkpoint: bool = False) -> InferenceModel:
    """A checkpoint file, an ensemble named config, a short name or a released architecture."""
    if Path(spec).is_file():
        return load_checkpoint(spec, swa=swa, arch=arch, trust_checkpoint=trust_checkpoint)
    if spec.endswith((".ckpt", ".pt", ".pth", ".safetensors")):
        raise FileNotFoundError(f"checkpoint file not found: {spec}")
    if spec in ENSEMBLES:
        return load_ensemble(ENSEMBLES[spec][1], name=spec)
    try:
        return load_released(SHORT_NAMES.get(spec, spec))
    except ValueError as err:
        raise ValueError(f"{err}; ensembles: {', '.join(ENSEMBLES)}; short names: {', '.join(SHORT_NAMES)}; "
                         f"or a checkpoint file") from None


def read_user_labels(path: str) -> list[str]:
    """An AudioSet-style ``index,mid,display_name`` CSV, or a text file with one name per line."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().lower().startswith("index,mid"):
        return read_display_names(path)
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_names_for(model: InferenceModel, labels: str | None) -> list[str]:
    """``--labels``, else the names the checkpoint carries, else AudioSet's for 527 outputs."""
    if labels:
        names = read_user_labels(labels)
        if len(names) != model.n_classes:
            raise ValueError(f"{labels} names {len(names)} classes but the model has {model.n_classes} outputs")
        return names
    if model.class_names is not None:
        return model.class_names
    if model.n_classes == AUDIOSET_CLASSES:
        return read_display_names(ensure_labels_csv())  # cached next to the weights; offline: says where to put it
    print(f"note: no class names for this model's {model.n_classes} outputs; pass --labels FILE to name them",
          file=sys.stderr)
    return [f"class {i}" for i in range(model.n_classes)]


def window_and_hop(model: InferenceModel, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
    """``--window`` and ``--hop`` (seconds; None: the model's window and half of it) in samples, checked."""
    sr = model.sample_rate
    window = round(window_s * sr) if window_s else model.window
    if not model.min_samples <= window <= model.max_samples:
        raise ValueError(f"the window (--window) must be between {model.min_samples / sr:.3f} and "
                         f"{model.max_samples / sr:.3f} s for this model")
    hop = round(hop_s * sr) if hop_s else window // 2
    if not 0 < hop <= window:
        raise ValueError("the hop (--hop) must be positive and at most the window")
    return window, hop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"architecture, ensemble named config or checkpoint file (default: {DEFAULT_MODEL})")
    parser.add_argument("--swa", action="store_true", help="a checkpoint's SWA weights instead of the live ones")
    parser.add_argument("--arch", help="the architecture of a checkpoint that does not carry its config "
                                       "(e.g. one of the original framework)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that holds more than tensors and plain data with a full unpickle: "
                             "that runs any code in the file, so only for files you trust (default: refused)")
    parser.add_argument("--labels", help="class names: index,mid,display_name CSV or one name per line "
                                         "(default: the checkpoint's, or AudioSet's for 527 classes)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per file (default: 5)")
    parser.add_argument("--window", type=float, help="window length in seconds (default: the model's, 10 s for "
                                                     "the released 10 s models)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half the window)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid",
                        help="sigmoid for multi-label models such as AudioSet's (default), softmax for single-label")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: bf16 where the hardware runs it natively, else fp32")
    parser.add_argument("--workers", type=int, default=2, help="processes decoding audio ahead (default: 2)")
    parser.add_argument("--csv", help="write the scores of every window here")
    parser.add_argument("--json", help="write windows, whole-file mean/max and top-k here")
    parser.add_argument("--plot", help="draw the strongest classes over time into this image (one per file)")
    parser.add_argument("--plot-classes", type=int, default=8, help="classes drawn by --plot (default: 8)")
    parser.add_argument("--embeddings", help="write each file's HEAR scene embedding ([files, D] .npy)")
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
    model = load_model(args.model, args.swa, args.arch, args.trust_checkpoint).place(args.device, args.precision)
    names = class_names_for(model, args.labels)
    window, hop = window_and_hop(model, args.window, args.hop)
    print(f"{model.describe()}; hop {hop / model.sample_rate:g} s; {len(files)} file(s)", file=sys.stderr)

    if args.embeddings:
        hear.configure(model, batch_size=args.batch_size)
    table = outputs.WindowCsv(args.csv, names) if args.csv else None
    results = []
    progress = tqdm(tag_files(model, files, window, hop, args.batch_size, args.activation, args.workers,
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, FileNotFoundError, RuntimeError, ValueError) as err:
        # what the user can fix (unknown model, offline without a file, bad labels file): no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
