"""End-to-end training throughput: the real loop (Lightning + AudioModule) against the bare network.

A loop step is what ``ex_audioset.py`` runs per batch: 10 s waveforms from RAM (collated, and on
a GPU pinned and copied by the DataLoader), the mel front end with its random bands and
SpecAugment, batch mixup, PaSST with structured patchout (40 time columns, 4 frequency rows),
BCE, the step and epoch loss logging, backward, fused AdamW, the progress bar and a CSV logger,
all in the ``pytorch_lightning.Trainer`` that ``helpers.experiment.trainer.build_trainer`` builds.
The bare step is the network alone on a spectrogram batch already on the device (forward, BCE,
backward, fused AdamW); the difference is what the loop adds per step. The mel front end alone
(training mode) is timed too, to explain it.

All of them are timed side by side inside one run: windows of loop steps alternate with windows
of bare steps, mel calls and a chain of large matmuls (the sustained matmul peak, in the run's
precision), and the best window of each kind counts, so a busy machine does not bias the ratios.

MFU = model FLOPs per step (3x the forward matmul FLOPs of the network,
``models.passt.flops_per_example``) x steps/s, over that measured peak and, on a known GPU, over
its data-sheet dense peak (TF32 for ``32-true``: ``fast_fp32_matmuls`` enables it on CUDA).

It also times the validation metrics (mAP and ROC-AUC of ``helpers.training.metrics``) for
20,000 clips x 527 classes on the device, next to scikit-learn's per-class loop on the CPU.

    .venv/bin/python benchmarks/train_loop.py                               # tiny PaSST, batch 12 and 64
    .venv/bin/python benchmarks/train_loop.py --models passt_s --batches 12  # PaSST-S
    .venv/bin/python benchmarks/train_loop.py --compile both                # with and without torch.compile

Each model and batch size runs in its own process. On a GPU the defaults are PaSST-S, bf16-mixed,
and both compile settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from train_speed import run_child

from helpers.training.speed import machine_description, synchronize, time_steps, training_step

#: network sizes: PaSST-S as released, and smaller ones for CPU runs (same loop, cheaper network)
MODELS = {
    "passt_s": dict(),
    "small": dict(depth=6, embed_dim=384, num_heads=6),
    "tiny": dict(depth=2, embed_dim=192, num_heads=3),
}
SAMPLES = 320000  # 10 s at 32 kHz: 1000 frames, the 99 time patches PaSST-S's encodings cover
N_CLASSES = 527

#: dense tensor-core peaks in TFLOP/s from NVIDIA's data sheets, by precision; first match on the name wins
SPEC_PEAKS = [
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0}),
    ("H100 NVL", {"bf16": 835.0, "tf32": 418.0}),
    ("H100", {"bf16": 989.4, "tf32": 494.7}),  # SXM
    ("H200", {"bf16": 989.4, "tf32": 494.7}),
    ("A100", {"bf16": 312.0, "tf32": 156.0}),
    ("L40S", {"bf16": 362.1, "tf32": 183.0}),
]


def spec_peak(device: str, precision: str) -> float | None:
    """The data-sheet matmul peak (FLOP/s) for this GPU and precision, None when unknown."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    kind = "bf16" if precision.startswith("bf16") else "tf32"
    return next((peaks[kind] * 1e12 for key, peaks in SPEC_PEAKS if key in name), None)


class SideBySide(pl.Callback):
    """Alternates timed windows inside one Lightning run, so that all figures share the machine's state.

    After ``warmup`` untimed loop steps, each of ``rounds`` rounds times ``steps`` loop steps (the
    device synced only at the window's ends, as a real run never syncs), then, from the end of the
    window's last step, ``steps`` bare network steps, ``steps`` mel front-end calls and a chain of
    large matmuls. Keeps the best window of each: other load on the machine only slows things down.
    """

    def __init__(self, warmup: int, steps: int, rounds: int, device: str, bare_step, mel_step, matmuls) -> None:
        self.warmup, self.steps, self.rounds, self.device = warmup, steps, rounds, device
        self.bare_step, self.mel_step, self.matmuls = bare_step, mel_step, matmuls
        self.best = {"loop": float("inf"), "bare": float("inf"), "mel": float("inf"), "matmul": float("inf")}
        self.start = self.fit_start = self.warmup_seconds = float("nan")

    def _window(self, batch_idx: int) -> tuple[int, int]:
        """(round, position in its window) of a training step; round -1 during the warm-up."""
        return (-1, 0) if batch_idx < self.warmup else divmod(batch_idx - self.warmup, self.steps)

    def on_train_start(self, trainer, pl_module):
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._window(batch_idx)[1] == 0 and batch_idx >= self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
            if batch_idx == self.warmup:
                self.warmup_seconds = self.start - self.fit_start  # includes compiling

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        round_, position = self._window(batch_idx)
        if round_ < 0 or position != self.steps - 1:
            return
        synchronize(self.device)
        self.best["loop"] = min(self.best["loop"], (time.perf_counter() - self.start) / self.steps)
        if round_ == 0:  # first use: optimizer state, kernel selection
            self.bare_step()
            self.mel_step()
            self.matmuls()
        self.best["bare"] = min(self.best["bare"], time_steps(self.bare_step, self.steps, self.device) / self.steps)
        self.best["mel"] = min(self.best["mel"], time_steps(self.mel_step, self.steps, self.device) / self.steps)
        self.best["matmul"] = min(self.best["matmul"], time_steps(self.matmuls, 1, self.device))


def matmul_chain(precision: str, device: str) -> tuple[Callable[[], None], float]:
    """Several back-to-back ``n x n`` matmuls (one alone is too short to be sustained), and their FLOPs."""
    n, chain = (8192, 20) if device == "cuda" else (2048, 6)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)

    def chained() -> None:
        for _ in range(chain):
            torch.matmul(a, b, out=out)

    return chained, 2.0 * n**3 * chain


def build_module(model: str, compiled: bool):
    from helpers.training.module import AudioModule
    from helpers.training.tasks import MultiLabelTask
    from models.build import get_model
    from models.preprocess import AugmentMelSTFT

    torch.manual_seed(0)
    net = get_model(pretrained=False, s_patchout_t=40, s_patchout_f=4, **MODELS[model])
    module = AudioModule(net, AugmentMelSTFT(), MultiLabelTask(), lr_lambda=lambda epoch: 1.0, mixup_alpha=0.3,
                         log_spectrograms=0)
    if compiled:
        module.net.compile()  # as helpers/experiment/commands.py does with compile=True
    return module


def waveforms_in_ram(clips: int):
    """A dataset of ``clips`` random 10 s waveforms with AudioSet-like multi-hot targets."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(clips, 1, SAMPLES, generator=g)
    targets = (torch.rand(clips, N_CLASSES, generator=g) < 0.005).float()

    class Clips(TensorDataset):
        def __getitem__(self, i):
            wave, target = super().__getitem__(i)
            return wave, f"clip{i}", target

    return Clips(waves, targets)


def measure_loop(model: str, batch: int, steps: int, rounds: int, warmup: int, device: str, precision: str,
                 compiled: bool, workers: int) -> dict:
    """Seconds per step of the real training loop, of the network alone and of the mel front end,
    and the sustained matmul FLOP/s, measured side by side (:class:`SideBySide`)."""
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader, RandomSampler

    from helpers.experiment.trainer import build_trainer
    from helpers.training.optim import make_optimizer
    from models.build import get_model
    from models.passt import flops_per_example

    module = build_module(model, compiled)
    data = waveforms_in_ram(2 * batch)
    total_steps = warmup + rounds * steps
    loader = DataLoader(data, batch_size=batch, num_workers=workers, pin_memory=device == "cuda",
                        persistent_workers=workers > 0,
                        sampler=RandomSampler(data, replacement=True, num_samples=batch * total_steps))

    # the bare network step: the same network (weights, precision, fused AdamW) on a batch already on the device
    spectrograms = torch.randn(batch, 1, module.mel.n_mels, module.mel.frames(SAMPLES), device=device)
    targets = (torch.rand(batch, N_CLASSES, device=device) < 0.005).float()
    wave = torch.randn(batch, SAMPLES, device=device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    bare = {}

    def bare_step() -> None:
        if not bare:  # made on first use, once Lightning has moved the network to the device
            bare["optimizer"] = make_optimizer(module.parameter_groups(), lr=module.lr)
        training_step(module.net, spectrograms, targets, module.task.loss, bare["optimizer"], dtype)

    matmuls, matmul_flops = matmul_chain(precision, device)
    timer = SideBySide(warmup, steps, rounds, device, bare_step, lambda: module.mel(wave), matmuls)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer({"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1,
                                 "precision": precision, "max_steps": total_steps, "limit_val_batches": 0,
                                 "num_sanity_val_steps": 0, "enable_checkpointing": False,
                                 "enable_model_summary": False, "log_every_n_steps": 50, "benchmark": True},
                                callbacks=[timer], loggers=[CSVLogger(tmp)], default_root_dir=tmp)
        trainer.fit(module, loader)
    with torch.device("meta"):
        reference = get_model(pretrained=False, s_patchout_t=40, s_patchout_f=4, **MODELS[model])
    best = timer.best
    return {"loop_s": best["loop"], "bare_s": best["bare"], "mel_s": best["mel"],
            "peak_flops": matmul_flops / best["matmul"], "warmup_s": timer.warmup_seconds,
            "flops_per_step": 3 * flops_per_example(reference, module.mel.frames(SAMPLES), training=True) * batch}


def measure_metrics(device: str, examples: int = 20000, classes: int = N_CLASSES, sklearn: bool = True) -> dict:
    """Seconds for mAP + ROC-AUC of ``examples x classes`` on ``device`` (and scikit-learn's loop on the CPU)."""
    from helpers.training.metrics import multilabel_metrics

    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(examples, classes, generator=g) < 0.005).float()
    logits = torch.randn(examples, classes, generator=g) * 4 + targets * 3
    scores = torch.sigmoid(logits)  # float32: saturated scores tie, as a trained network's do
    on_device = scores.to(device), targets.to(device)
    multilabel_metrics(*on_device)
    ours = min(time_steps(lambda: multilabel_metrics(*on_device), 1, device) for _ in range(3))
    result = {"metrics_s": ours}
    if sklearn:
        import numpy as np
        from sklearn.metrics import average_precision_score, roc_auc_score

        s, y = scores.double().numpy(), targets.numpy()
        start = time.perf_counter()
        per_class = [(average_precision_score(y[:, c], s[:, c]), roc_auc_score(y[:, c], s[:, c]))
                     for c in range(classes) if 0 < y[:, c].sum() < len(y)]
        result["sklearn_s"] = time.perf_counter() - start
        expected = np.mean(per_class, axis=0)
        got = multilabel_metrics(scores, targets)
        result["max_difference"] = float(max(abs(got["mAP"] - expected[0]), abs(got["roc_auc"] - expected[1])))
    return result


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default: passt_s on a GPU, tiny on a CPU")
    parser.add_argument("--batches", nargs="+", type=int, default=[12, 64])
    parser.add_argument("--precision", help="trainer precision (default: bf16-mixed on a GPU, 32-true on a CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per window (default: 20 on a GPU, 1 on a CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows of each kind; the best counts (default: 3)")
    parser.add_argument("--warmup", type=int, help="untimed loop steps first (default: 10 on a GPU, 2 on a CPU)")
    parser.add_argument("--compile", choices=["off", "on", "both"], help="torch.compile the network (default: "
                        "both on a GPU, off on a CPU)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: 4 on a GPU, 0 on a CPU)")
    parser.add_argument("--no-metrics", action="store_true", help="skip the metric timing")
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "metrics":
            result = measure_metrics(rest[0])
        else:
            model, batch, steps, rounds, warmup, device, precision, compiled, workers = rest
            result = measure_loop(model, int(batch), int(steps), int(rounds), int(warmup), device, precision,
                                  compiled == "on", int(workers))
        print(json.dumps(result))
        return

    on_gpu = args.device == "cuda"
    models = args.models or (["passt_s"] if on_gpu else ["tiny"])
    precision = args.precision or ("bf16-mixed" if on_gpu else "32-true")
    steps = args.steps or (20 if on_gpu else 1)
    warmup = args.warmup or (10 if on_gpu else 2)
    compile_modes = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[args.compile or ("both" if on_gpu else "off")]
    workers = args.workers if args.workers is not None else (4 if on_gpu else 0)
    sheet_peak = spec_peak(args.device, precision)
    kind = "bf16" if precision.startswith("bf16") else "fp32"
    print(f"Machine: {machine_description(args.device)}; {precision}; best of {args.rounds} windows of {steps} "
          f"steps after {warmup} warm-up steps; {workers} loader workers"
          + (f"; data-sheet peak {sheet_peak / 1e12:,.0f} TFLOP/s" if sheet_peak else ""), flush=True)
    header = (f"| model | batch | compile | loop ms/step | specs/s | MFU | bare network ms/step | "
              f"loop overhead ms/step | mel front end ms | {kind} matmul peak GFLOP/s | warm-up s |")
    if sheet_peak:
        header = header.replace("| MFU |", "| MFU | MFU (data sheet) |")
    print("\n" + header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for model in models:
        for batch in args.batches:
            for compiled in compile_modes:
                r = run_child(["loop", model, str(batch), str(steps), str(args.rounds), str(warmup), args.device,
                               precision, compiled, str(workers)], script=__file__)
                achieved = r["flops_per_step"] / r["loop_s"]
                overhead = r["loop_s"] - r["bare_s"]
                cells = [model, str(batch), compiled, f"{r['loop_s'] * 1e3:,.1f}", f"{batch / r['loop_s']:,.1f}",
                         f"{achieved / r['peak_flops']:.0%}"]
                if sheet_peak:
                    cells.append(f"{achieved / sheet_peak:.0%}")
                cells += [f"{r['bare_s'] * 1e3:,.1f}", f"{overhead * 1e3:,.1f} ({overhead / r['loop_s']:.0%})",
                          f"{r['mel_s'] * 1e3:,.1f}", f"{r['peak_flops'] / 1e9:,.0f}", f"{r['warmup_s']:,.1f}"]
                print("| " + " | ".join(cells) + " |", flush=True)

    if not args.no_metrics:
        m = run_child(["metrics", args.device], script=__file__)
        print(f"\nvalidation metrics, 20,000 x 527 (mAP + ROC-AUC): {m['metrics_s']:.3f} s on {args.device}; "
              f"scikit-learn's per-class loop: {m['sklearn_s']:.2f} s on the CPU ({m['sklearn_s'] / m['metrics_s']:.1f}x); "
              f"difference to scikit-learn's mAP and ROC-AUC: {m['max_difference']:.1e}", flush=True)

if __name__ == "__main__":
    main()
