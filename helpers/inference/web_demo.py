"""Web demo: upload or record audio in the browser and see what a PaSST model hears in it.

    passt-app --model NAME_OR_CKPT [--port 7860] [--host 127.0.0.1] [--share]

(``python app.py ...`` in the repository runs the same command.) ``--model`` takes what
``passt-tag`` takes (a released architecture or alias, a short name, an
ensemble named config, a checkpoint trained here with its class names; ``--swa``, ``--arch``,
``--labels``), and so do ``--window``, ``--hop``, ``--top-k``, ``--activation``, ``--device`` and
``--precision`` (the page's starting values for the first four). The page shows the top classes
as bars (mean over windows), the strongest classes over time for audio longer than one window,
the scores of every window as CSV and JSON downloads and, on request, the HEAR scene embedding
(.npy); a file that cannot be decoded gets its reason in the page.

A thin layer: the windows, scores, files and plot are ``helpers.inference`` (the code of
``passt-tag``); only the page is Gradio. See README.md, "Web demo".
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio's import: no calls home

import argparse
import atexit
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

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
from helpers.inference.model import InferenceModel
from helpers.inference.tagging import ACTIVATIONS, tag_files

PLOT_CLASSES = 8  # lines in the plot over time (passt-tag --plot-classes default)


@dataclass
class Analysis:
    """What the page shows for one clip."""

    status: str  # Markdown: the clip and its windows, or why it failed
    top: dict[str, float] = field(default_factory=dict)  # class name -> whole-file score, strongest first
    plot: Path | None = None  # the strongest classes over time (only for more than one window)
    files: list[Path] = field(default_factory=list)  # downloads: CSV, JSON, embedding, plot


class Demo:
    """A loaded model with its class names and what one click on "Tag" does; no Gradio in here."""

    def __init__(self, model: InferenceModel, class_names: list[str], batch_size: int = 8,
                 work_dir: str | os.PathLike | None = None) -> None:
        self.model, self.class_names, self.batch_size = model, class_names, batch_size
        hear.configure(model, batch_size=batch_size)  # what the embedding on request reads
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="passt_app_"))
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def analyse(self, path: str | None, window_s: float | None = None, hop_s: float | None = None,
                top_k: int = 5, activation: str = "sigmoid", embedding: bool = False) -> Analysis:
        """Tag the audio file at ``path`` as ``passt-tag`` does (window and hop in seconds; None:
        the model's window and half of it) and write the downloads."""
        if not path:
            return Analysis("Upload a file or record a clip first.")
        name = Path(path).name
        try:
            window, hop = window_and_hop(self.model, window_s or None, hop_s or None)
        except ValueError as err:
            return Analysis(f"**Settings:** {err}.")
        start = time.perf_counter()
        result = next(tag_files(self.model, [path], window, hop, self.batch_size, activation,
                                embed=hear.get_scene_embeddings if embedding else None))
        seconds = time.perf_counter() - start
        result.path = name  # the downloads name the file, not the server's upload folder
        if not result.ok:
            return Analysis(f"**Could not read {name}:** {result.error.replace(str(path), name)}")

        out = Path(tempfile.mkdtemp(dir=self.work_dir))
        stem = Path(name).stem
        files = [out / f"{stem}_scores.csv", out / f"{stem}_scores.json"]
        table = outputs.WindowCsv(files[0], self.class_names)
        table.add(result)
        table.close()
        outputs.write_json(files[1], outputs.to_json([result], self.class_names, self.model.name, top_k))
        if embedding:
            files.append(out / f"{stem}_embedding.npy")
            outputs.write_embeddings(files[-1], [result])
        plot = None
        if len(result.starts) > 1:
            plot = out / f"{stem}_over_time.png"
            outputs.plot(plot, result, self.class_names, PLOT_CLASSES)
            files.append(plot)

        sr = self.model.sample_rate
        n = len(result.starts)
        lines = [f"**{name}**: {result.duration:.2f} s, {n} window{'s' if n > 1 else ''} of "
                 f"{min(window, round(result.duration * sr)) / sr:g} s"
                 + (f" every {hop / sr:g} s" if n > 1 else "") + f"; tagged in {seconds:.2f} s."]
        lines += [f"Note: {note}." for note in result.notes]
        if embedding:
            lines.append(f"Embedding: {result.embedding.shape[0]} values (logits and embedding, as the HEAR API).")
        top = {self.class_names[c]: round(mean, 6) for c, mean, _ in result.top(top_k)}
        return Analysis("\n\n".join(lines), top, plot, files)

    def page_outputs(self, path, window_s, hop_s, top_k, activation, embedding) -> tuple[Any, ...]:
        """:meth:`analyse` as the page's components take it: status, bars, plot, downloads. Whatever
        goes wrong is said in the page (and the traceback goes to the server's log)."""
        try:
            a = self.analyse(path, window_s, hop_s, int(top_k), activation, embedding)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory on a very long file: say so, keep serving
            traceback.print_exc()
            a = Analysis(f"**Failed:** {type(err).__name__}: {err}")
        return (a.status, a.top or None, gr.update(value=str(a.plot) if a.plot else None, visible=a.plot is not None),
                [str(f) for f in a.files] or None)


def build_page(demo: Demo, window_s: float | None, hop_s: float | None, top_k: int, activation: str) -> gr.Blocks:
    """The page: audio in, settings, the "Tag" button; status, bars, plot and downloads out.

    ``window_s``/``hop_s`` None: the fields start empty, meaning the model's window and half the window.
    """
    model = demo.model
    with gr.Blocks(title="PaSST audio tagging") as page:
        gr.Markdown(f"## PaSST audio tagging\n{model.describe()}. Each window of the audio is scored on its own "
                    f"(the activation of its logits, see Settings); the bars show the mean over the windows, "
                    f"the plot each window.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="audio",
                                 label="Audio: drop a file (any format FFmpeg reads, any length) or record")
                with gr.Accordion("Settings", open=False):
                    sr = model.sample_rate
                    window = gr.Number(window_s, elem_id="window",
                                       label=f"window (s; empty: the model's {model.window / sr:g} s; "
                                             f"{model.min_samples / sr:.2f} to {model.max_samples / sr:.2f})")
                    hop = gr.Number(hop_s, label="hop between window starts (s; empty: half the window)",
                                    elem_id="hop")
                    k = gr.Slider(1, min(25, model.n_classes), value=min(top_k, model.n_classes), step=1,
                                  label="classes shown", elem_id="top-k")
                    act = gr.Radio(list(ACTIVATIONS), value=activation, label="activation", elem_id="activation")
                    embed = gr.Checkbox(False, label="also compute the embedding (.npy download)", elem_id="embed")
                button = gr.Button("Tag", variant="primary", elem_id="tag")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                top = gr.Label(label="Top classes (mean over windows)", elem_id="top")
                # no label badge nor buttons: they would cover the plot's title and legend (the PNG is
                # among the downloads)
                plot = gr.Image(label="Strongest classes over time", show_label=False, buttons=[], format="png",
                                type="filepath", visible=False, elem_id="over-time")
                files = gr.File(label="Downloads: scores of every window, plot, embedding", file_count="multiple",
                                elem_id="downloads")
        button.click(demo.page_outputs, [audio, window, hop, k, act, embed], [status, top, plot, files])
    return page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--window", type=float, help="starting window length in seconds (default: the model's)")
    parser.add_argument("--hop", type=float, help="starting hop in seconds (default: half the window)")
    parser.add_argument("--top-k", type=int, default=5, help="starting number of classes shown (default: 5)")
    parser.add_argument("--activation", choices=ACTIVATIONS,
                        help="starting activation (default: what the checkpoint's task used, else sigmoid)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    add_device_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also a temporary public link through Gradio's servers")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = model_from_args(args).place(args.device, args.precision)
    names = class_names_for(model, args.labels)
    window_and_hop(model, args.window, args.hop)  # bad starting values fail here, not in the page
    work_dir = tempfile.mkdtemp(prefix="passt_app_")
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    demo = Demo(model, names, args.batch_size, work_dir)
    page = build_page(demo, args.window, args.hop, args.top_k, args.activation or model.activation)
    print(f"{model.describe()}; {len(names)} classes", file=sys.stderr, flush=True)
    # system fonts: the default theme would fetch its web font from the internet
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    page.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, theme=theme,
                allowed_paths=[work_dir])


def run(argv: list[str] | None = None) -> None:
    """The ``passt-app`` console command (``argv``: default the command line)."""
    run_command(main, argv)
