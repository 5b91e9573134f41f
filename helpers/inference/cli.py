"""What the commands that are not sacred experiments share: tagging (``passt-tag``, ``inference.py``),
export (``passt-export``, ``export.py``) and the web demo (``passt-app``, ``app.py``).

* :func:`add_model_arguments` - ``--model`` (any model name of :mod:`models.registry` or a
  checkpoint file), ``--swa``, ``--arch``, ``--trust-checkpoint``, ``--labels``;
  :func:`model_from_args` loads what they name;
* :func:`class_names_for` - the names of a model's outputs: ``--labels``, the checkpoint's, the
  label set of a released model, or AudioSet's for 527 outputs;
* :func:`window_and_hop` - ``--window`` / ``--hop`` in samples, checked against the model;
* :func:`run_command` - runs a command's ``main``: what a user can fix is one line on stderr and exit
  status 2; ``-d``/``--debug`` (:func:`add_debug_argument`) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from helpers.inference.model import InferenceModel, load_model
from models.checkpoints import CheckpointError
from models.labels import class_names, read_display_names
from models.registry import DEFAULT_ARCH, LABEL_SETS

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--swa``, ``--arch``, ``--trust-checkpoint`` and ``--labels``."""
    parser.add_argument("--model", default=DEFAULT_ARCH,
                        help="architecture, alias, short name, ensemble named config or checkpoint file "
                             f"(default: {DEFAULT_ARCH})")
    parser.add_argument("--swa", action="store_true", help="a checkpoint's SWA weights instead of the live ones")
    parser.add_argument("--arch", help="the architecture of a checkpoint that does not carry its config "
                                       "(e.g. one of the original framework)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that holds more than tensors and plain data with a full unpickle: "
                             "that runs any code in the file, so only for files you trust (default: refused)")
    parser.add_argument("--labels", help="class names: index,mid,display_name CSV or one name per line "
                                         "(default: the checkpoint's, or those of the released model)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``."""
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 where the hardware runs it natively, else fp32")


def model_from_args(args: argparse.Namespace) -> InferenceModel:
    """The model ``--model`` names (with ``--swa``, ``--arch``, ``--trust-checkpoint``), not yet placed."""
    return load_model(args.model, args.swa, args.arch, args.trust_checkpoint)


def read_user_labels(path: str) -> list[str]:
    """An AudioSet-style ``index,mid,display_name`` CSV, or a text file with one name per line."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().lower().startswith("index,mid"):
        return read_display_names(path)
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_names_for(model: InferenceModel, labels: str | None) -> list[str]:
    """``--labels``, else the names the checkpoint carries, else those of the released model's label set
    (fetched into the cache once; offline: the error says where to put the file), else AudioSet's for
    527 outputs (checkpoints of AudioSet training carry no names), else ``class <i>`` with a note."""
    if labels:
        names = read_user_labels(labels)
        if len(names) != model.n_classes:
            raise ValueError(f"{labels} names {len(names)} classes but the model has {model.n_classes} outputs")
        return names
    if model.class_names is not None:
        return model.class_names
    label_set = model.label_set
    if label_set is None and model.n_classes == LABEL_SETS["audioset"].n_classes:
        label_set = "audioset"
    if label_set is not None:
        return class_names(label_set)
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


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``-d``/``--debug``: an error shows its traceback (read by :func:`run_command`)."""
    parser.add_argument("-d", "--debug", action="store_true", help="show the traceback of an error")


def run_command(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Exit with ``main(argv)``'s status (``argv``: default the command line); errors a user can fix
    (unknown model, offline without a file, bad labels file) are one line on stderr and status 2,
    without a traceback, unless ``-d``/``--debug`` asks for it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        sys.exit(main(argv))
    except (CheckpointError, FileNotFoundError, RuntimeError, ValueError) as err:
        if "-d" in argv or "--debug" in argv:
            raise
        print(f"error: {err}\n(-d shows where it came from)", file=sys.stderr)
        sys.exit(2)
