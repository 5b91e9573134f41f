"""What knowledge distillation costs: step time, teacher passes, disk, item loading.

Times are process CPU seconds on the CPU (other processes of a shared machine do not inflate them)
and wall seconds after the queued kernels finish on a GPU (``--device cuda``).

* ``step``: one training step (``AudioModule.training_step``, backward, fused AdamW) of a student on
  10 s clips, in the precision training picks here: labels only; offline distillation (teacher
  targets with the batch); consistent teaching by replay (also per-example mel banks and masks);
  online distillation with a teacher of the student's size (``ensemble_many`` runs nine such
  forwards). Windows of each kind alternate and the best window counts, so a busy machine does
  not bias the ratios.
* ``store``: ``store_teacher_logits``'s forward (mel front end + teacher) of ``ensemble_many``:
  its nine PaSST-S members at their real sizes and strides, random weights, clips per second, in the
  teacher precision ``auto`` picks here and in fp32.
* ``disk``: bytes per clip of real store files (527 classes): clean fp16 logits, top-20, and 40
  recorded draws of each, against a 10 s mp3 as the prepare scripts write it.
* ``items``: loading a training item (decode + augmentation) with and without teacher targets.

    .venv/bin/python benchmarks/distill.py                      # all parts, student PaSST-S
    .venv/bin/python benchmarks/distill.py --parts step --student small
    .venv/bin/python benchmarks/distill.py --device cuda --parts step store --batch 12
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpers.data.audio_io import encode_audio
from helpers.data.teacher_store import StoreWork, TeacherStore, encode_tape
from helpers.training.distill import Distillation, OnlineTeacher
from helpers.training.module import AudioModule, mel_forward
from helpers.training.optim import make_optimizer
from helpers.training.speed import machine_description
from helpers.training.tasks import MultiLabelTask
from models.build import get_ensemble_model, get_model
from models.precision import autocast_dtype, decide_precision
from models.preprocess import AugmentMelSTFT
from models.registry import ENSEMBLES, resolve_arch

SIZES = {"passt_s": dict(), "small": dict(depth=6, embed_dim=384, num_heads=6),
         "tiny": dict(depth=2, embed_dim=192, num_heads=3)}
SAMPLES = 320000  # 10 s at 32 kHz
N_CLASSES = 527


def student(size: str) -> torch.nn.Module:
    return get_model(pretrained=False, n_classes=N_CLASSES, s_patchout_t=40, s_patchout_f=4, **SIZES[size])


def clock(device: torch.device):
    """The benchmark's clock (module docstring): CPU seconds of this process, or GPU wall seconds."""
    if device.type != "cuda":
        return time.process_time

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def _best(fn, repeats: int, windows: int, now) -> float:
    """The least seconds per call (by ``now``) over ``windows`` windows of ``repeats`` calls."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(windows):
        start = now()
        for _ in range(repeats):
            fn()
        best = min(best, (now() - start) / repeats)
    return best


def bench_step(size: str, batch: int, windows: int, steps: int, device: torch.device) -> dict:
    """Whole steps of each kind (alternating windows), and the parts distillation adds, timed alone."""
    now = clock(device)
    dtype = autocast_dtype(decide_precision(device, "auto", "train"))
    teacher = OnlineTeacher(get_model(pretrained=False, n_classes=N_CLASSES, **SIZES[size]))
    teacher.place(device)
    variants = {"labels": None, "offline": Distillation(0.9), "replay": Distillation(0.9),
                "online": Distillation(0.9, teacher=teacher)}
    torch.manual_seed(0)
    wave = (torch.randn(batch, 1, SAMPLES) * 0.1).to(device)
    targets = (torch.rand(batch, N_CLASSES) > 0.98).float().to(device)
    soft = torch.cat([torch.rand(batch, N_CLASSES), torch.ones(batch, 1)], 1).to(device)
    mel = AugmentMelSTFT().train().to(device)
    draws = mel.draw_augment(batch, SAMPLES).to(device)
    batches = {"labels": (wave, None, targets), "offline": (wave, None, targets, soft),
               "replay": (wave, None, targets, soft, draws), "online": (wave, None, targets)}
    torch.manual_seed(0)
    module = AudioModule(student(size), AugmentMelSTFT(), MultiLabelTask(), mixup_alpha=0.3,
                         log_spectrograms=0).to(device)
    module.log = lambda *args, **kwargs: None  # outside a Trainer
    module.train()
    optimizer = make_optimizer(module.parameter_groups(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def step(name: str) -> None:
        module.distill = variants[name]
        with autocast:
            loss = module.training_step(batches[name], 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    whole = {name: float("inf") for name in variants}
    for name in variants:
        step(name)  # warm-up
    order = list(variants)
    for window in range(windows):
        for name in order[window % 4:] + order[:window % 4]:  # each kind first in turn
            start = now()
            for _ in range(steps):
                step(name)
            whole[name] = min(whole[name], (now() - start) / steps)

    # the parts: losses (forward + backward on the logits), the front end, the online teacher
    logits = torch.randn(batch, N_CLASSES, device=device, requires_grad=True)
    perm, lam = torch.randperm(batch, device=device), torch.rand(batch, device=device)
    task, kd = MultiLabelTask(), Distillation(0.9)

    def labels_loss():
        task.loss(logits, targets, perm, lam).backward()

    def kd_loss():
        t = kd.teacher_targets(task, batches["offline"], None, perm, lam)
        kd.loss(task, logits, targets, t, perm, lam)[0].backward()

    spec = mel_forward(mel, wave)
    parts = {"labels_loss": _best(labels_loss, 50, windows, now), "kd_loss": _best(kd_loss, 50, windows, now),
             "mel": _best(lambda: mel_forward(mel, wave), 2, windows, now),
             "mel_replayed_draws": _best(lambda: mel_forward(mel, wave, draws), 2, windows, now),
             "online_teacher": _best(lambda: teacher.logits(spec), 1, windows, now)}
    base = whole["labels"]
    added = {"offline": parts["kd_loss"] - parts["labels_loss"],
             "replay": parts["kd_loss"] - parts["labels_loss"] + parts["mel_replayed_draws"] - parts["mel"],
             "online": parts["kd_loss"] - parts["labels_loss"] + parts["online_teacher"]}
    return {"student": size, "batch": batch, "precision": str(dtype or torch.float32),
            "clock": "wall seconds" if device.type == "cuda" else "CPU seconds",
            "seconds_per_step": whole, "step_overhead": {k: v / base - 1 for k, v in whole.items()},
            "parts_seconds": parts, "added_by_parts": {k: v / base for k, v in added.items()}}


def bench_store(batch: int, repeats: int, device: torch.device) -> dict:
    archs = [resolve_arch(m) for m in ENSEMBLES["ensemble_many"][1]]
    net = get_ensemble_model([{"arch": a.name, "fstride": a.fstride, "tstride": a.tstride, "pretrained": False}
                              for a in archs]).eval().to(device)
    mel = AugmentMelSTFT().eval().to(device)
    wave = (torch.randn(batch, 1, SAMPLES) * 0.1).to(device)
    draws = mel.draw_augment(batch, SAMPLES).to(device)
    now = clock(device)
    out = {"members": len(archs), "batch": batch}
    for precision in ("auto", "fp32"):
        dtype = autocast_dtype(decide_precision(device, precision, "infer"))
        timings, clocked_seconds = [], []
        with torch.no_grad():
            for i in range(repeats + 1):
                start, start_clock = time.perf_counter(), now()
                spec = mel_forward(mel, wave, draws)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    net(spec)
                if i:  # the first is a warm-up
                    clocked = now() - start_clock
                    timings.append(time.perf_counter() - start)
                    clocked_seconds.append(clocked)
        out[f"clips_per_second_{precision}"] = batch / min(timings)
        out[f"seconds_per_clip_{precision}"] = min(clocked_seconds) / batch
        out[f"precision_{precision}"] = str(dtype or torch.float32)
    return out


def bench_disk(rows: int = 512) -> dict:
    out = {}
    logits = np.random.default_rng(0).normal(-6, 3, (rows, N_CLASSES)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for draws in (0, 40):
            for topk in (None, 20):
                work = StoreWork(Path(tmp) / f"d{draws}k{topk}.h5", rows, N_CLASSES, draws, topk, chunk_rows=rows)
                work.begin()
                tape = encode_tape({"gain_db": 3, "roll": 10, "wavmix": True, "partner": 5, "lam": 0.7,
                                    "partner.gain_db": -2, "partner.roll": -4})
                for d in range(max(draws, 1)):
                    work.add(np.arange(rows), np.full(rows, d), np.ones(rows, bool), logits,
                             {k: np.full(rows, v) for k, v in tape.items()}, np.zeros((rows, 6), np.int64))
                work.merge([f"Y{i:011d}" for i in range(rows)])
                out[f"draws={draws} topk={topk}"] = TeacherStore(work.path).size_per_clip()
    mp3 = encode_audio(np.random.default_rng(0).normal(0, 0.1, SAMPLES).astype(np.float32), 32000, "mp3")
    out["mp3_10s_clip"] = len(mp3)
    return out


def bench_items(clips: int = 32, lookups: int = 2000) -> dict:
    """Seconds per training item (decode, gain, roll, wavmix) and per teacher-target lookup (the HDF5
    reads and the activation a wrapper adds; measured apart: which items wavmix mixes varies)."""
    from audioset.dataset import build_training_set
    from audioset.synthetic import build_mini_audioset
    from helpers.data.teacher_data import ReplayedDraws, TeacherTargets, clip_names

    with tempfile.TemporaryDirectory() as tmp:
        mini = build_mini_audioset(Path(tmp), clip_seconds=10)
        train = build_training_set([mini["balanced_train_hdf5"], mini["unbalanced_train_hdf5"]], clip_length=10)
        names = clip_names(train)
        rows = np.arange(len(names))
        stores = {}
        for draws in (0, 40):
            work = StoreWork(Path(tmp) / f"t{draws}.h5", len(names), N_CLASSES, draws, None, chunk_rows=len(names))
            work.begin()
            tape = {k: np.full(len(names), v) for k, v in encode_tape({"gain_db": 1, "roll": 3}).items()}
            for d in range(max(draws, 1)):
                work.add(rows, np.full(len(names), d), np.ones(len(names), bool),
                         np.zeros((len(names), N_CLASSES)), tape, np.zeros((len(names), 6), np.int64))
            work.merge(names)
            stores[draws] = TeacherStore(work.path)
        offline = TeacherTargets(train, stores[0], "sigmoid")
        replay = ReplayedDraws(train, stores[40], "sigmoid")
        torch.manual_seed(0)
        start = time.perf_counter()
        for i in range(clips):
            train[i % len(train)]
        item = (time.perf_counter() - start) / clips
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for row in rng.integers(len(names), size=lookups):
            offline._clip(int(row), names[row])
        clean = (time.perf_counter() - start) / lookups
        start = time.perf_counter()
        for row, d in zip(rng.integers(len(names), size=lookups), rng.integers(40, size=lookups), strict=True):
            replay.store.draw(int(row), int(d))
            replay._soft(int(row), int(d))
        replayed = (time.perf_counter() - start) / lookups
    return {"seconds_per_item": item, "seconds_per_lookup": {"offline": clean, "replay": replayed},
            "share_of_item": {"offline": clean / item, "replay": replayed / item}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["step", "store", "disk", "items"])
    parser.add_argument("--device", default="cpu", help="where step and store run (cpu or cuda)")
    parser.add_argument("--student", default="passt_s", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--store-batch", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict = {"machine": machine_description(device.type)}
    print(results["machine"], flush=True)
    if "step" in args.parts:
        results["step"] = bench_step(args.student, args.batch, args.windows, args.steps, device)
        print(json.dumps(results["step"], indent=1), flush=True)
    if "store" in args.parts:
        results["store"] = bench_store(args.store_batch, repeats=2, device=device)
        print(json.dumps(results["store"], indent=1), flush=True)
    if "disk" in args.parts:
        results["disk"] = bench_disk()
        print(json.dumps(results["disk"], indent=1), flush=True)
    if "items" in args.parts:
        results["items"] = bench_items()
        print(json.dumps(results["items"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
