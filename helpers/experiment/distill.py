"""Knowledge distillation in every experiment: the ``kd`` config, the teacher, the store command.

* :func:`store_teacher_logits` (command ``store_teacher_logits``): runs a teacher over the training
  set and stores its logits keyed by clip (:mod:`helpers.data.teacher_store`): clean clips
  (``kd.draws=0``) or ``R`` recorded augmentation draws per clip (consistent teaching);
  resumable, shardable over ``DDP=N``, with a progress bar;
* :func:`teacher_training_set` and :func:`distillation_for`: what training adds with ``kd.weight > 0``:
  the teacher targets with every item (``kd.teacher_logits``, offline; ``kd.replay``: replayed
  draws) or the online teacher (``kd.teacher`` without ``kd.teacher_logits``).

The teacher (``kd.teacher``) is what ``evaluate_only`` can evaluate, named as ``inference.py --model``
names it: a released architecture or one of its names, an ensemble named config (``ensemble_many``),
or a checkpoint file written by training here (``kd.teacher_swa``: its SWA weights). For the store
command ``kd.teacher=None`` means the experiment's ``models`` config (``store_teacher_logits with
ensemble_many``, ``with models.checkpoint=...``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Dataset

from helpers.data.teacher_data import ReplayedDraws, TeacherTargets, clip_names
from helpers.data.teacher_store import StoreWork, TeacherStore, bytes_per_clip, plain_settings
from helpers.experiment.spec import ExperimentSpec
from helpers.experiment.trainer import build_trainer
from helpers.training.distill import Distillation, OnlineTeacher
from helpers.training.tasks import Task
from helpers.training.teacher_pass import TeacherJobs, TeacherPass
from models.build import build_mel, build_net, net_output_classes
from models.checkpoints import read_checkpoint
from models.preprocess import AugmentMelSTFT
from models.registry import ArchConfig, resolve_model

__all__ = ["store_teacher_logits", "teacher_training_set", "distillation_for", "teacher_models_config"]

#: what makes two front ends give the same spectrogram (their augmentation settings aside)
SPECTROGRAM_KEYS = ("n_mels", "sr", "win_length", "hopsize", "n_fft", "fmin", "fmax")
#: front-end settings a replay does not depend on (the recorded masks replace the random ones)
REPLAY_FREE_MEL_KEYS = ("freqm", "timem", "iid_masks", "fmin_aug_range")


# --------------------------------------------------------------------------------- the teacher
def _released(arch: ArchConfig) -> dict[str, Any]:
    """``models.net`` arguments of a released architecture, as it was trained."""
    return {"arch": arch.name, "pretrained": True, "n_classes": arch.n_classes, "fstride": arch.fstride,
            "tstride": arch.tstride, "input_fdim": arch.input_fdim, "input_tdim": arch.input_tdim}


def teacher_models_config(name: str, trust_checkpoint: bool = False, swa: bool = False) -> dict[str, Any]:
    """A ``models`` config (``net``, ``mel``, ``ensemble``, ``checkpoint``) for a teacher: a checkpoint file
    written by training here, or any name of the registry (:func:`models.registry.resolve_model`)."""
    if os.path.isfile(name):
        record = read_checkpoint(name, trust_checkpoint=trust_checkpoint).get("passt") or {}
        models = record.get("models") if isinstance(record, dict) else None
        if not models:
            raise ValueError(f"kd.teacher={name!r} was not written by training here (it has no 'passt' record of its "
                             f"network): store its logits with kd.teacher=None and models.checkpoint={name} plus the "
                             f"models.net settings it was trained with")
        net = {**models["net"], "pretrained": False}
        return {"net": net, "mel": dict(models.get("mel") or {}), "ensemble": [], "checkpoint": name,
                "checkpoint_swa": swa, "trust_checkpoint": trust_checkpoint}
    if name.endswith((".ckpt", ".pt", ".pth", ".safetensors")):
        raise FileNotFoundError(f"kd.teacher={name!r}: no such checkpoint file")
    try:
        choice = resolve_model(name)
    except ValueError as err:
        raise ValueError(f"kd.teacher={name!r}: {err}; or a checkpoint file") from None
    first = choice.members[0]
    mel = {"n_mels": first.input_fdim, "hopsize": first.hopsize}
    if choice.is_ensemble:
        return {"net": {"pretrained": True}, "mel": mel, "ensemble": [_released(a) for a in choice.members]}
    return {"net": _released(first), "mel": mel, "ensemble": []}


def _teacher_config(cfg: dict[str, Any]) -> dict[str, Any]:
    kd = cfg["kd"]
    if kd["teacher"] is None:
        return cfg["models"]
    return teacher_models_config(str(kd["teacher"]), bool(cfg["models"]["trust_checkpoint"]), bool(kd["teacher_swa"]))


def output_classes(net: nn.Module) -> int:
    """The logits a PaSST or an ensemble of them gives per clip."""
    return int(net.models[0].num_classes if hasattr(net, "models") else net.num_classes)


def check_same_spectrogram(teacher_mel: dict[str, Any], student_mel: dict[str, Any], what: str) -> None:
    """Fail when two front-end configs give different spectrograms (the teacher reads the student's)."""
    a, b = AugmentMelSTFT(**teacher_mel), AugmentMelSTFT(**student_mel)
    differ = [k for k in SPECTROGRAM_KEYS if getattr(a, k) != getattr(b, k)]
    if differ:
        raise ValueError(f"{what} computes other spectrograms than models.mel: "
                         + ", ".join(f"{k}={getattr(a, k)} (models.mel: {getattr(b, k)})" for k in differ))


# ------------------------------------------------------------------------------- the store
def store_settings(spec: ExperimentSpec, cfg: dict[str, Any], teacher_cfg: dict[str, Any], seed: int) -> dict:
    """What a store depends on; partial work made with other settings is not mixed in."""
    kd = cfg["kd"]
    return {"experiment": spec.name, "teacher": kd["teacher"] or "models", "teacher_models": teacher_cfg,
            "teacher_precision": kd["teacher_precision"], "seed": int(seed), "mel": cfg["models"]["mel"],
            "basedataset": cfg.get("basedataset", {})}


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def store_teacher_logits(spec: ExperimentSpec, run: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the teacher over the training set and store its logits in ``kd.teacher_logits`` (module docstring)."""
    kd = cfg["kd"]
    if not kd["teacher_logits"]:
        raise ValueError("store_teacher_logits writes kd.teacher_logits: set it to the file to make "
                         "(e.g. kd.teacher_logits=teachers/ensemble_many.h5)")
    path = os.fspath(kd["teacher_logits"])
    teacher_cfg = _teacher_config(cfg)
    check_same_spectrogram(teacher_cfg.get("mel") or {}, cfg["models"]["mel"], f"the teacher {kd['teacher']!r}")
    train_set = spec.train_set()
    names = clip_names(train_set)
    teacher = build_net(teacher_cfg)
    n_classes = output_classes(teacher)
    seed = int(kd["store_seed"])
    settings = store_settings(spec, cfg, teacher_cfg, seed)
    if os.path.isfile(path):
        store = TeacherStore(path)
        if store.settings != plain_settings(settings) or len(store) != len(names):
            raise FileExistsError(f"{path} exists and was made with other settings or another training set; "
                                  f"delete it or set kd.teacher_logits to another file")
        print(f"{path} is complete: {len(store)} clips, {store.size_per_clip():.0f} bytes per clip")
        return {"path": path, "clips": len(store), "bytes_per_clip": store.size_per_clip(), "computed_chunks": 0}
    work = StoreWork(path, len(names), n_classes, kd["draws"], kd["topk"], settings, kd["chunk_rows"])
    work.begin()
    mel = build_mel(cfg["models"]["mel"])
    jobs = TeacherJobs(train_set, names, mel, kd["draws"], seed)
    module = TeacherPass(teacher, mel, jobs, work, {**cfg["datasets"]["test"]}, kd["teacher_precision"])
    trainer_cfg = {**cfg["trainer"], "precision": "32-true", "enable_checkpointing": False}
    trainer = build_trainer(trainer_cfg, [], False, default_root_dir=cfg["output_dir"], ddp_cfg=cfg["ddp"],
                            command="evaluate")
    done_before = len(work.done_chunks())
    if trainer.is_global_zero:
        print(f"teacher {kd['teacher'] or 'models'} ({n_classes} classes) over {len(names)} clips x "
              f"{max(kd['draws'], 1)} {'recorded draws' if kd['draws'] else 'clean forward'}: {work.n_chunks} chunks "
              f"of {work.chunk_rows} clips, {done_before} done before; {bytes_per_clip(n_classes, kd['draws'], kd['topk'])} "
              f"bytes per clip", flush=True)
    start = time.perf_counter()
    trainer.predict(module, return_predictions=False)
    seconds = time.perf_counter() - start
    _barrier()  # every process has written its chunks
    result = {"path": path, "clips": len(names), "draws": kd["draws"], "topk": kd["topk"],
              "processes": trainer.world_size, "computed_chunks": len(work.done_chunks()) - done_before,
              "seconds": seconds}
    if trainer.is_global_zero:
        work.merge(names)
        store = TeacherStore(path)
        result["bytes_per_clip"] = store.size_per_clip()
        print(f"stored {path}: {len(store)} clips ({int((~store.valid).sum())} unreadable), "
              f"{result['bytes_per_clip']:.0f} bytes per clip")
    _barrier()
    run.info.update(teacher_logits=result)
    return result


# ------------------------------------------------------------------------------------ training
def _enabled(cfg: dict[str, Any]) -> bool:
    return bool(cfg["kd"]["weight"])


def teacher_training_set(train_set: Dataset, cfg: dict[str, Any], task: Task) -> Dataset:
    """The training set with teacher targets (offline distillation), else ``train_set`` unchanged."""
    kd = cfg["kd"]
    if not _enabled(cfg) or not kd["teacher_logits"]:
        return train_set
    store = TeacherStore(kd["teacher_logits"])
    check_store(store, cfg)
    wrapper = ReplayedDraws if kd["replay"] else TeacherTargets
    return wrapper(train_set, store, task.activation, kd["temperature"])


def check_store(store: TeacherStore, cfg: dict[str, Any]) -> None:
    """Fail before training when a store cannot teach this student (classes, front end, clips)."""
    n_classes = net_output_classes(cfg["models"])
    if store.n_classes != n_classes:
        raise ValueError(f"{store.path} holds {store.n_classes} logits per clip; the network has {n_classes} outputs "
                         f"(models.net.n_classes): the teacher must predict the student's classes")
    if not cfg["kd"]["replay"]:
        return
    recorded, student = store.settings.get("mel") or {}, cfg["models"]["mel"]
    differ = sorted(k for k in set(recorded) | set(student)
                    if k not in REPLAY_FREE_MEL_KEYS and recorded.get(k) != student.get(k))
    if differ:
        raise ValueError(f"{store.path} recorded its draws with another front end: "
                         + ", ".join(f"models.mel.{k}={student.get(k)} (recorded: {recorded.get(k)})" for k in differ))
    data = store.settings.get("basedataset") or {}
    for key in ("sample_rate", "clip_length"):
        if key in data and key in cfg.get("basedataset", {}) and data[key] != cfg["basedataset"][key]:
            raise ValueError(f"{store.path} recorded clips with basedataset.{key}={data[key]}; this run has "
                             f"{cfg['basedataset'][key]}")


def distillation_for(cfg: dict[str, Any], training: bool = True) -> Distillation | None:
    """The distillation of the ``kd`` config (None when ``kd.weight`` is 0 or not training)."""
    kd = cfg["kd"]
    if not training or not _enabled(cfg):
        return None
    if kd["teacher_logits"]:
        return Distillation(kd["weight"], kd["temperature"])
    if kd["replay"]:
        raise ValueError("kd.replay=True replays the draws recorded in kd.teacher_logits: set it")
    if not kd["teacher"]:
        raise ValueError(f"kd.weight={kd['weight']} needs a teacher: kd.teacher_logits (stored by "
                         f"store_teacher_logits: offline) or kd.teacher (run online on the student's input)")
    teacher_cfg = _teacher_config(cfg)
    check_same_spectrogram(teacher_cfg.get("mel") or {}, cfg["models"]["mel"], f"the teacher {kd['teacher']!r}")
    net = build_net(teacher_cfg)
    if output_classes(net) != net_output_classes(cfg["models"]):
        raise ValueError(f"the teacher {kd['teacher']!r} has {output_classes(net)} outputs; the network has "
                         f"{net_output_classes(cfg['models'])} (models.net.n_classes)")
    return Distillation(kd["weight"], kd["temperature"], OnlineTeacher(net, kd["teacher_precision"]))
