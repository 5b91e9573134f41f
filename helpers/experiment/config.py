"""The config tree every experiment shares, and the one check of a run's config.

This is the single description of the config keys: each key is declared below with its default
and a one-line description, and ``python ex_<dataset>.py print_config`` shows both. The dataset
ingredient (``basedataset``) describes its own keys next to their defaults in its ``dataset.py``, the
keys every dataset shares in :mod:`helpers.experiment.dataset_config`.

Sections that pass their keys to a library accept every argument of that library, not only the
keys listed here: ``trainer`` (``pytorch_lightning.Trainer``), ``models.net``
(:func:`models.build.get_model`), ``models.mel`` (:class:`models.preprocess.AugmentMelSTFT`),
``datasets.training`` / ``datasets.test`` (``torch.utils.data.DataLoader``), ``wandb``
(``WandbLogger`` and ``wandb.init``) and ``checkpointing`` (``ModelCheckpoint``).

:func:`check_config` runs once per command, before any work: every key a command line or named
config adds that is not in the defaults must be an argument of its section's library, otherwise
the error names the closest valid keys.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from sacred import Ingredient
from sacred.config.config_dict import ConfigDict
from torch.utils.data import DataLoader

from helpers.data.loaders import OWN_LOADER_KEYS, default_num_workers
from helpers.experiment.ddp import cores_per_process, ddp_processes_from_env
from helpers.experiment.loggers import default_wandb_mode
from helpers.experiment.trainer import LEGACY_TRAINER_KEYS, translate_legacy_keys
from models.build import get_model
from models.preprocess import AugmentMelSTFT


def signature_defaults(func: Callable) -> dict[str, Any]:
    """``{argument: default}`` of ``func`` (a class gives its ``__init__``), for config defaults."""
    params = inspect.signature(func).parameters
    return {name: p.default for name, p in params.items()
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


def _arguments(func: Callable, exclude: Iterable[str] = ()) -> set[str]:
    names = {n for n, p in inspect.signature(func).parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self", *exclude}


class RunConfig(ConfigDict):
    """A sacred config made from a dict that gives every run its own copy of the values.

    Sacred's ``ConfigDict`` hands the same nested dicts to every run of the experiment, and a
    config hook's update (``models.net.n_classes`` from the data, a resume's batch size) changes
    them in place: a second run in the same process (tests, notebooks) started from the first's
    values as its defaults.
    """

    def __call__(self, fixed=None, preset=None, fallback=None):
        shared = self._conf
        self._conf = copy.deepcopy(shared)
        try:
            return super().__call__(fixed, preset, fallback)
        finally:
            self._conf = shared


class DescribedConfig(RunConfig):
    """A sacred config whose keys, nested or not, carry descriptions that ``print_config`` shows.

    Sacred's own config scopes document only top-level variables (by their comments).
    """

    def __init__(self, values: dict[str, Any], docs: dict[str, str]) -> None:
        super().__init__(values)
        self.docs = dict(docs)

    def __call__(self, fixed=None, preset=None, fallback=None):
        summary = super().__call__(fixed, preset, fallback)
        summary.docs.update(self.docs)
        return summary


class _Keys:
    """Collects dotted keys with their defaults and descriptions."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.docs: dict[str, str] = {}

    def add(self, path: str, value: Any, doc: str | None = None) -> None:
        """Set ``path`` (dotted) to ``value`` with description ``doc``."""
        *parents, key = path.split(".")
        node = self.values
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
        if doc:
            self.docs[path] = doc

    def describe(self, path: str, doc: str) -> None:
        """Describe a key (or section) whose value is set elsewhere."""
        self.docs[path] = doc


def shared_config(experiment: str = "audioset") -> DescribedConfig:
    """Defaults shared by every experiment (the original AudioSet recipe); ``experiment`` names its wandb project."""
    c = _Keys()

    c.describe("models", "the network, its front end and where their weights come from")
    # structured patchout as in the paper (40 time columns, 4 frequency rows)
    c.add("models.net", {**signature_defaults(get_model), "s_patchout_t": 40, "s_patchout_f": 4},
          "arguments of models.build.get_model")
    c.describe("models.net.arch", "a released architecture, alias or short name (models.registry)")
    c.describe("models.net.pretrained", "start from the released weights of arch")
    c.describe("models.net.n_classes", "outputs of the head (re-initialised when the weights have another count)")
    c.describe("models.net.fstride", "patch stride over frequency (16 = no overlap)")
    c.describe("models.net.tstride", "patch stride over time")
    c.describe("models.net.input_tdim", "frames the time encodings cover (998 = 10 s at hop 320)")
    c.describe("models.net.s_patchout_t", "time columns dropped by structured patchout in training")
    c.describe("models.net.s_patchout_f", "frequency rows dropped by structured patchout in training")
    c.describe("models.net.u_patchout", "patches dropped by unstructured patchout in training")
    c.describe("models.net.depth", "None: the architecture's; a number builds a smaller model from scratch")
    c.describe("models.net.cut_depth", "drop blocks of a pretrained model (see models.passt.cut_blocks)")
    c.describe("models.net.grad_checkpointing", "recompute each block in the backward pass instead of keeping its "
               "activations: the same gradients; a PaSST-S step on 30 s clips needs 1/2 (fp32) to 1/3 (bf16) of its "
               "memory, for a third more compute in the blocks (README: The network)")
    c.add("models.mel", signature_defaults(AugmentMelSTFT), "arguments of models.preprocess.AugmentMelSTFT")
    c.describe("models.mel.freqm", "SpecAugment: widest frequency mask, in mel bins (0: off)")
    c.describe("models.mel.timem", "SpecAugment: widest time mask, in frames (0: off)")
    c.describe("models.mel.hopsize", "STFT hop in samples (320 at 32 kHz: 100 frames per second)")
    c.add("models.ensemble", [],
          "non-empty: the network is the mean of several; [arch, fstride, tstride] or dicts of get_model "
          "arguments plus checkpoint (a local file) and swa")
    c.add("models.checkpoint", None, "start models.net from this local file (state dict or Lightning .ckpt)")
    c.add("models.checkpoint_swa", False, "take the net_swa. weights of that Lightning checkpoint")
    c.add("models.trust_checkpoint", False,
          "load models.checkpoint, ensemble members' checkpoints and ckpt_path with a full unpickle, which runs "
          "any code the files hold: only for files you trust (False: tensors and plain data only, others refused)")

    ddp = ddp_processes_from_env()
    c.describe("trainer", "arguments of pytorch_lightning.Trainer")
    c.add("trainer.max_epochs", 130, "epochs to train")
    c.add("trainer.accelerator", "auto", "auto: the GPU when there is one, else the CPU")
    c.add("trainer.devices", ddp or 1, "processes on this machine (DDP=N in the environment sets N)")
    c.add("trainer.strategy", "ddp" if ddp > 1 else "auto", "ddp for several processes")
    c.add("trainer.num_nodes", 1, "machines")
    c.add("trainer.precision", "auto",
          "auto: training in the fastest mixed precision the hardware runs natively, evaluate_only in fp32; "
          "16 becomes bf16-mixed on CPUs with native bf16, else 32-true (models/precision.py; "
          "PASST_CPU_PRECISION=fp32|bf16 forces the CPU's side)")
    c.add("trainer.num_sanity_val_steps", 0)
    c.add("trainer.limit_train_batches", None, "None: all; a number: that many batches per epoch")
    c.add("trainer.limit_val_batches", None, "None: all; a number: that many batches per validation")
    c.add("trainer.check_val_every_n_epoch", 1, "validate (and write the end-of-epoch checkpoints) every k epochs; "
          "epochs that update the SWA average and the last epoch are always validated")
    c.add("trainer.accumulate_grad_batches", 1)
    c.add("trainer.gradient_clip_val", None, "clip the gradients' norm (gradient_clip_algorithm=value: each value) "
          "to this; unscaled first under 16-mixed")
    c.add("trainer.log_every_n_steps", 50)
    c.add("trainer.benchmark", True, "cuDNN autotuning")
    c.add("trainer.use_distributed_sampler", False, "our samplers shard among DDP ranks themselves")

    workers = default_num_workers(cores_per_process())
    pin = torch.cuda.is_available()
    c.describe("datasets", "DataLoader arguments of the two loaders")
    c.add("datasets.training", dict(batch_size=12, num_workers=workers, shuffle=True, pin_memory=pin,
                                    persistent_workers=True, drop_last=False), "the training loader")
    c.describe("datasets.training.num_workers",
               "per process: max(1, min(16, cores - 1)); cores = the CPUs this process can use (affinity, cgroup "
               "quota, SLURM_CPUS_PER_TASK) / the training processes sharing them")
    c.describe("datasets.training.weighted_sampler", "use the experiment's own sampler (e.g. class-balanced)")
    c.add("datasets.test", dict(batch_size=20, num_workers=workers, pin_memory=pin, persistent_workers=False),
          "the evaluation loader (workers start at each validation: no idle decoders during training); "
          "other evaluation loaders take the keys they do not set from it")

    c.describe("ddp", "DistributedDataParallel with trainer.strategy=ddp (helpers/experiment/trainer.py)")
    c.add("ddp.bucket_cap_mb", 25, "gradient bucket size; 25 MB closes one bucket per PaSST-S block (28 MB of "
          "fp32 gradients), all-reduced as soon as that block's backward is done")
    c.add("ddp.bf16_compress", False, "all-reduce gradients in bf16: half the traffic, for several machines "
          "(NCCL on GPUs only; Lightning ignores it on CPUs)")
    c.add("ddp.timeout_s", 1800, "seconds a collective waits for the other ranks before it fails (a rank that hangs "
          "without dying)")
    c.add("ddp.dead_rank_after_s", 30, "a rank without a heartbeat for this long is taken for dead and the run stops "
          "(helpers/experiment/rank_watch.py)")

    c.describe("wandb", "arguments of pytorch_lightning's WandbLogger and wandb.init")
    c.add("wandb.project", f"passt_{experiment}")
    c.add("wandb.entity", None)
    c.add("wandb.name", None, "None: <experiment>-<run folder>")
    c.add("wandb.group", None)
    c.add("wandb.tags", None)
    c.add("wandb.notes", None)
    c.add("wandb.mode", default_wandb_mode(), "offline unless a wandb account is configured; disabled: off")
    c.add("wandb.save_dir", None, "None: $WANDB_DIR, else the run folder")
    c.add("wandb.log_model", False)

    c.describe("checkpointing", "arguments of the best-checkpoint ModelCheckpoint")
    c.add("checkpointing.monitor", None, "None: <first evaluation set>_<task metric>, e.g. val_mAP")
    c.add("checkpointing.mode", None, "None: the task's (max for mAP)")
    c.add("checkpointing.save_top_k", 1)
    c.add("checkpointing.save_last", True, "last.ckpt after every epoch: nothing lost on a crash")
    c.add("checkpointing.last_every_n_steps", None, "also write last.ckpt every N training steps inside epochs")
    c.add("checkpointing.dirpath", None, "None: <run folder>/checkpoints")

    c.describe("speed_test", "the model_speed_test command")
    c.add("speed_test.batch_size", 100)
    c.add("speed_test.steps", 100, "timed steps")
    c.add("speed_test.warmup_steps", 10, "untimed steps first")

    c.describe("kd", "knowledge distillation: training from a teacher's predictions (helpers/experiment/distill.py)")
    c.add("kd.weight", 0.0, "lambda: loss = (1 - lambda) * label loss + lambda * distillation loss; 0: no "
          "distillation; 1: label-free (`with kd`: 0.9, the original's)")
    c.add("kd.temperature", 1.0, "T of the teacher's and the student's probabilities (the loss is scaled by T**2)")
    c.add("kd.teacher_logits", None, "the teacher's stored logits (an HDF5 file made by store_teacher_logits, "
          "which writes it): offline distillation")
    c.add("kd.teacher", None, "the teacher: a released architecture, an ensemble named config (ensemble_many) or "
          "a checkpoint file trained here; training runs it online on the student's input when kd.teacher_logits "
          "is None; store_teacher_logits runs it (None: the models config)")
    c.add("kd.teacher_swa", False, "a checkpoint teacher: its SWA weights")
    c.add("kd.teacher_precision", "auto", "the teacher's precision (auto: the fastest the hardware runs natively; "
          "fp32, bf16, fp16)")
    c.add("kd.replay", False, "consistent teaching: replay the augmentation draws recorded in kd.teacher_logits "
          "(stored with kd.draws > 0), one per clip and epoch")
    c.add("kd.draws", 0, "store_teacher_logits: augmentation draws recorded per clip (0: one clean forward per clip)")
    c.add("kd.store_seed", 0, "store_teacher_logits: seed of the recorded draws (fixed, so that running the command "
          "again continues the same work)")
    c.add("kd.chunk_rows", 256, "store_teacher_logits: clips per chunk of work (written as it finishes: what a kill "
          "loses at most, per process)")
    c.add("kd.topk", None, "store_teacher_logits: keep the k largest logits per draw and the mean of the others "
          "(None: all, float16)")

    c.add("lr", 0.00002, "base learning rate")
    c.add("adamw", True, "AdamW; False: Adam without weight decay")
    c.add("weight_decay", 0.0001, "AdamW's decoupled weight decay")
    c.add("weight_decay_all", False, "also decay tokens and positional encodings, as the original")
    c.add("schedule_mode", "exp_lin", "exp_lin (warm-up, plateau, linear ramp-down) or cos_cyc")
    c.add("warm_up_len", 5, "epochs of exponential warm-up (cos_cyc: cycle length)")
    c.add("ramp_down_start", 50, "epoch where the linear ramp-down starts")
    c.add("ramp_down_len", 50, "epochs of ramp-down")
    c.add("last_lr_value", 0.01, "final learning-rate multiplier")
    c.add("use_mixup", True, "mixup of spectrograms within a batch")
    c.add("mixup_alpha", 0.3, "mixup weight ~ Beta(mixup_alpha, mixup_alpha), the larger part kept")
    c.add("swa", True, "stochastic weight averaging into net_swa")
    c.add("swa_epoch_start", 50, "first epoch (0-based) folded into the average")
    c.add("swa_freq", 5, "then every swa_freq epochs")
    c.add("compile", False, "torch.compile the network")
    c.add("per_rank_seed", True, "DDP ranks reseed with seed + rank (False: the same draws on all, as the original)")
    c.add("log_spectrograms", 2, "first training batches with a spectrogram image in wandb")
    c.add("output_dir", "outputs", "run folders: <output_dir>/<experiment>/<time>-run<id>")
    c.add("ckpt_path", None, "resume training from this Lightning checkpoint (.../checkpoints/last.ckpt)")
    c.describe("seed", "the random seed for this experiment")  # sacred adds the key
    return DescribedConfig(c.values, c.docs)


# ------------------------------------------------------------------------------------ checking
def _library_sections() -> dict[str, set[str]]:
    """Config sections whose keys are arguments of a library, with every argument they accept."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    loader = _arguments(DataLoader.__init__, exclude=("dataset", "sampler")) | set(OWN_LOADER_KEYS)
    return {
        "trainer": _arguments(pl.Trainer.__init__, exclude=("logger", "callbacks")) | set(LEGACY_TRAINER_KEYS),
        "models.net": set(signature_defaults(get_model)),
        "models.mel": set(signature_defaults(AugmentMelSTFT)),
        "datasets.training": loader,
        "datasets.test": loader,
        "wandb": _arguments(WandbLogger.__init__) | _arguments(wandb.init),
        "checkpointing": _arguments(ModelCheckpoint.__init__),
    }


#: per-member keys of ``models.ensemble`` dicts that are not ``get_model`` arguments
MEMBER_EXTRA_KEYS = ("checkpoint", "swa")


def _unknown_key(path: str, valid: Iterable[str]) -> ValueError:
    section, _, key = path.rpartition(".")
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(f'{section}.{c}' if section else c for c in close)}?" if close else ""
    where = f"'{section}'" if section else "the top level"
    return ValueError(f"{path} is not a config key.{hint} Valid keys of {where}: {', '.join(valid)}. "
                      f"`print_config` lists every key with its description.")


def _node(cfg: dict, path: str) -> Any:
    node = cfg
    for part in path.split(".") if path else []:
        node = node[part]
    return node


def default_config(ingredient: Ingredient) -> dict[str, Any]:
    """The config an experiment (or ingredient) has before any command-line or named-config update."""
    cfg: dict[str, Any] = {}
    for config in ingredient.configurations:
        cfg = dict(config(preset=cfg))  # each config scope sees and fills in what the earlier ones set
    for sub in ingredient.ingredients:
        cfg[sub.path] = default_config(sub)
    return cfg


def _paths(cfg: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every entry, dicts included (lists are leaves)."""
    out = []
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else key
        out.append(path)
        if isinstance(value, dict):
            out.extend(_paths(value, path))
    return out


def check_config(cfg: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Fail before any work on keys the defaults do not know.

    A key added under a library section must be an argument of that library; any other added key
    is a typo. The error names the closest valid keys. ``models.ensemble`` entries are checked too.
    """
    sections = _library_sections()
    translate_legacy_keys(cfg.get("trainer", {}), announce=False)  # Lightning 1.x keys without an equivalent
    for name, value in defaults.get("datasets", {}).items():  # every loader an experiment declares
        if isinstance(value, dict):
            sections.setdefault(f"datasets.{name}", sections["datasets.test"])
    known = set(_paths(defaults)) | {"seed"}
    for path in _paths(cfg):
        if path in known or path.startswith("__doc__") or path.endswith(".__doc__"):
            continue
        parent, _, key = path.rpartition(".")
        if parent and parent not in known:
            continue  # inside a dict that is itself unknown: reported for that dict
        if parent in sections:
            if key not in sections[parent]:
                raise _unknown_key(path, sections[parent] | set(_node(defaults, parent)))
            continue
        raise _unknown_key(path, [k for k in _node(defaults, parent) if k != "__doc__"])

    for i, entry in enumerate(cfg.get("models", {}).get("ensemble") or []):
        if isinstance(entry, dict):
            valid = sections["models.net"] | set(MEMBER_EXTRA_KEYS)
            for key in entry:
                if key not in valid:
                    raise _unknown_key(f"models.ensemble[{i}].{key}", valid)
        elif not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise ValueError(f"models.ensemble[{i}] = {entry!r}: use [arch, fstride, tstride] or a dict like "
                             f"{{'arch': ..., 'fstride': 10, 'tstride': 10, 'checkpoint': 'path.ckpt'}}")


def plain(value: Any) -> Any:
    """Sacred's read-only config containers as plain dicts/lists (safe to hand to libraries)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
