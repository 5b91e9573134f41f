"""The one LightningModule every experiment trains and evaluates with.

Per batch of waveforms ``[B, channels, samples]``: the mel front end runs on the accelerator
inside the module, then (training only) batch mixup on the spectrograms, then the network, then
the task's loss. What differs between datasets (loss, metrics, best-checkpoint metric) comes in
as a :class:`helpers.training.tasks.Task`.

Validation keeps the logits and targets of each whole evaluation set, gathers them from all
processes (DDP), drops the padding ``DistributedSampler`` adds, and computes the task metrics on
the full set on every rank, on the accelerator, logged as ``<set>_<metric>`` and ``<set>_loss``
(one set named ``val`` by default: ``val_mAP``; FSD50K validates ``valid`` and ``eval``, one
loader each). With SWA the averaged network is evaluated beside the live one as
``swa_<set>_<metric>`` in the epochs that updated it.

With knowledge distillation (a :class:`helpers.training.distill.Distillation`), the training loss is
``(1 - lambda) * label loss + lambda * distillation loss`` against a teacher's probabilities (from
the batch, or from an online teacher run on the student's input); validation is unchanged.

The training and validation steps never wait for the accelerator: random draws (mixup, mel
bands, patchout, time-encoding offsets) happen on the device and nothing is read back to the
host per step (``tests/test_no_host_sync.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from helpers.training.distill import Distillation
from helpers.training.gather import is_unshuffled_distributed_sampler, restore_padded_order
from helpers.training.mixup import draw_mixup, mix
from helpers.training.optim import make_optimizer
from helpers.training.swa import make_swa_copy
from helpers.training.tasks import Task


def spectrogram_image(spectrogram: torch.Tensor) -> np.ndarray:
    """A ``[n_mels, frames]`` spectrogram as a uint8 image, low frequencies at the bottom."""
    img = spectrogram.detach().float().cpu()
    if img.dim() == 3:  # [channels, F, T]: show the first channel
        img = img[0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    return (img.flip(0).numpy() * 255).astype(np.uint8)


def mel_forward(mel: nn.Module | None, wave: torch.Tensor, augment: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, C, samples]`` (or ``[B, samples]``) waveforms to ``[B, C, n_mels, frames]`` spectrograms.

    ``augment``: the front end's draws of each example (``AugmentMelSTFT.draw_augment``, one row per
    example; single-channel batches): the recorded augmentation of consistent teaching. The same
    function makes the teacher's input when the draws are recorded and the student's when they are
    replayed, so both are the same bits.
    """
    if mel is None:
        return wave
    if wave.dim() == 2:
        wave = wave.unsqueeze(1)
    batch, channels, samples = wave.shape
    if augment is None:
        spectrograms = mel(wave.reshape(batch * channels, samples))
    else:
        if channels != 1:
            raise ValueError(f"recorded front-end draws are per clip; the batch has {channels} channels")
        spectrograms = mel(wave.reshape(batch, samples), augment=augment)
    return spectrograms.reshape(batch, channels, *spectrograms.shape[1:])


def dynamic_batch(spectrograms: torch.Tensor) -> torch.Tensor:
    """``spectrograms`` with its batch axis marked dynamic for ``torch.compile`` (a no-op without it).

    A compiled network then compiles one graph per mode (training, eval) for all batch sizes:
    the last, smaller batch of an epoch (``drop_last=False``) does not recompile it.
    """
    torch._dynamo.maybe_mark_dynamic(spectrograms, 0)
    return spectrograms


def no_weight_decay_names(net: nn.Module) -> set[str]:
    """Full parameter names that sub-modules list in their ``no_weight_decay()`` (timm convention)."""
    names: set[str] = set()
    for prefix, module in net.named_modules():
        method = getattr(module, "no_weight_decay", None)
        if callable(method):
            names.update(f"{prefix}.{n}" if prefix else n for n in method())
    return names


class AudioModule(pl.LightningModule):
    """Mel front end + network + task, with mixup, AdamW + LambdaLR schedule and optional SWA.

    Args:
        net: ``forward(spectrograms [B, C, n_mels, frames]) -> (logits, embedding)``.
        mel: ``forward(wave [B, samples]) -> [B, n_mels, frames]``; None when batches already hold
            spectrograms.
        task: loss/metrics of the dataset (:mod:`helpers.training.tasks`).
        lr_lambda: learning-rate multiplier per epoch (:mod:`helpers.training.schedules`).
        lr: base learning rate.
        adamw: AdamW with ``weight_decay``; False gives Adam without weight decay (as the original).
        weight_decay: AdamW's decoupled weight decay.
        weight_decay_all: also decay what ``net.no_weight_decay()`` lists (tokens and positional
            encodings). Default False: decaying encodings pulls them to zero, which is no useful
            regularisation (timm's convention); True reproduces the original, which decayed all.
        mixup_alpha: Beta parameter of batch mixup; None or 0 switches mixup off.
        swa: keep an averaged copy ``net_swa`` (updated by :class:`helpers.training.swa.SWACallback`).
        log_spectrograms: how many of the first training batches log a spectrogram image (wandb).
        metadata: stored in every checkpoint under ``"passt"`` (the experiment writes the ``models``
            config and the class names there, so a checkpoint alone rebuilds and names its network).
        eval_sets: names of the evaluation sets, in the order of the validation loaders; they
            prefix the metrics (``val`` -> ``val_mAP``).
        distill: knowledge distillation (None: the label loss alone).
    """

    def __init__(self, net: nn.Module, mel: nn.Module | None, task: Task,
                 lr_lambda: Callable[[int], float] | None = None, lr: float = 2e-5, adamw: bool = True,
                 weight_decay: float = 1e-4, weight_decay_all: bool = False, mixup_alpha: float | None = 0.3,
                 swa: bool = False, log_spectrograms: int = 2, metadata: dict | None = None,
                 eval_sets: tuple[str, ...] = ("val",), distill: Distillation | None = None) -> None:
        super().__init__()
        self.net = net
        self.mel = mel
        self.task = task
        self.lr_lambda = lr_lambda
        self.lr = lr
        self.adamw = adamw
        self.weight_decay = weight_decay
        self.weight_decay_all = weight_decay_all
        self.mixup_alpha = mixup_alpha or None
        self.log_spectrograms = log_spectrograms
        self.metadata = metadata
        self.net_swa = make_swa_copy(net) if swa else None
        # in the state dict: checkpoints and resumed runs keep counting the same average
        self.register_buffer("swa_n_averaged", torch.zeros((), dtype=torch.long))
        self.register_buffer("swa_last_epoch", torch.full((), -1, dtype=torch.long))  # last epoch that updated it
        self.eval_sets = tuple(eval_sets)
        self.distill = distill
        self._val_outputs: dict[tuple[int, str], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        #: examples of each evaluation set in the last validation (after removing DDP padding)
        self.last_eval_examples: dict[str, int] = {}
        #: the same for the first evaluation set
        self.last_val_examples = 0

    # ----------------------------------------------------------------------------------- forward
    def mel_forward(self, wave: torch.Tensor, augment: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, samples]`` (or ``[B, samples]``) waveforms to ``[B, C, n_mels, frames]`` (:func:`mel_forward`)."""
        return mel_forward(self.mel, wave, augment)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and embeddings of the live network for a waveform batch."""
        return self.net(self.mel_forward(wave))

    def evaluated_nets(self) -> list[tuple[str, nn.Module]]:
        """``(metric prefix, network)`` pairs validated: the live net, and the SWA average in epochs that updated it."""
        nets = [("", self.net)]
        if self.net_swa is not None and int(self.swa_last_epoch) == self.current_epoch:
            nets.append(("swa_", self.net_swa))
        return nets

    # ---------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        if self.distill is not None and self.distill.teacher is not None:
            self.distill.teacher.place(self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        wave, names, targets = batch[0], batch[1], batch[2]
        spectrograms = self.mel_forward(wave, self.distill.mel_draws(batch) if self.distill is not None else None)
        perm = lam = None
        if self.mixup_alpha:
            perm, lam = draw_mixup(spectrograms.shape[0], self.mixup_alpha, device=spectrograms.device)
            spectrograms = mix(spectrograms, perm, lam)
        if batch_idx < self.log_spectrograms and self.current_epoch == 0:
            self._log_spectrogram(spectrograms, names, batch_idx)
        logits, _ = self.net(dynamic_batch(spectrograms))
        if self.distill is None:
            loss = self.task.loss(logits, targets, perm, lam)  # the task mixes its targets like the inputs
        else:
            teacher = self.distill.teacher_targets(self.task, batch, spectrograms, perm, lam)
            loss, label_loss, kd_loss = self.distill.loss(self.task, logits, targets, teacher, perm, lam)
            for name, value in (("train_label_loss", label_loss), ("train_kd_loss", kd_loss)):
                self.log(name, value.detach(), on_step=False, on_epoch=True, sync_dist=True,
                         batch_size=spectrograms.shape[0])
        # Nothing here reads a value back to the host (an accelerator would stall on it): the step
        # loss goes to the loggers only, which read it every `trainer.log_every_n_steps` steps; the
        # progress bar shows the epoch mean, reduced over the DDP ranks once, at the epoch's end (a
        # step value with prog_bar=True is read every step, and sync_dist on it all-reduces every step).
        detached = loss.detach()
        self.log("train_loss_step", detached, on_step=True, on_epoch=False, batch_size=spectrograms.shape[0])
        self.log("train_loss_epoch", detached, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=spectrograms.shape[0])
        return loss

    def _log_spectrogram(self, spectrograms: torch.Tensor, names, batch_idx: int) -> None:
        """One spectrogram image (what the network sees, mixup included) per early batch."""
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                name = names[0] if isinstance(names, (list, tuple)) and names else str(batch_idx)
                logger.log_image(key="train_spectrograms", images=[spectrogram_image(spectrograms[0])],
                                 caption=[f"batch {batch_idx}: {name}"])

    # -------------------------------------------------------------------------------- validation
    def setup(self, stage: str) -> None:
        # Under DDP Lightning advises sync_dist=True for every epoch-level value; the evaluation
        # metrics are computed on the gathered set and already equal on every rank
        for name in self.eval_sets:
            warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('(swa_)?{name}_")

    def on_validation_epoch_start(self) -> None:
        # chosen once per epoch: reading swa_n_averaged on every batch would sync the accelerator
        self._val_nets = self.evaluated_nets()
        self._val_outputs = {(i, prefix): [] for i in range(len(self.eval_sets)) for prefix, _ in self._val_nets}

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        wave, targets = batch[0], batch[2]
        spectrograms = self.mel_forward(wave)
        for prefix, net in self._val_nets:
            logits, _ = net(dynamic_batch(spectrograms))
            # kept on the device (the AudioSet evaluation set is ~42 MB of logits): no per-batch copy
            self._val_outputs[(dataloader_idx, prefix)].append((logits.detach().float(), targets))

    def on_validation_epoch_end(self) -> None:
        metrics: dict[str, float] = {}
        for (index, prefix), outputs in self._val_outputs.items():
            if not outputs:
                continue
            logits = torch.cat([o[0] for o in outputs])
            targets = torch.cat([o[1] for o in outputs])
            # every rank scores the whole set on its accelerator: as fast as one rank doing it, and
            # every rank then holds the metric its checkpoint callback monitors (no broadcast)
            logits, targets = self._gather_eval_set(logits, targets, index)
            name = self.eval_sets[index]
            self.last_eval_examples[name] = int(logits.shape[0])
            metrics[f"{prefix}{name}_loss"] = float(self.task.loss(logits, targets))
            for metric, value in self.task.metrics(logits, targets).items():
                metrics[f"{prefix}{name}_{metric}"] = value
        self.last_val_examples = self.last_eval_examples.get(self.eval_sets[0], 0)
        self._val_outputs = {}
        if metrics:
            # identical on every rank already (computed on the gathered set): no sync needed
            self.log_dict(metrics, prog_bar=False, sync_dist=False, rank_zero_only=False)

    def _gather_eval_set(self, logits: torch.Tensor, targets: torch.Tensor,
                         index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The full evaluation set ``index`` from all processes, each example once."""
        if self.trainer.world_size <= 1:
            return logits, targets
        gathered_logits = self.all_gather(logits)
        gathered_targets = self.all_gather(targets)
        loaders = self.trainer.val_dataloaders
        loader = loaders[index] if isinstance(loaders, (list, tuple)) else loaders
        sampler = getattr(loader, "sampler", None)
        if is_unshuffled_distributed_sampler(sampler):
            n = len(sampler.dataset)
            return restore_padded_order(gathered_logits, n), restore_padded_order(gathered_targets, n)
        rank_zero_warn("Validation sampler is not an unshuffled DistributedSampler: the gathered "
                       "evaluation set may contain duplicates.")
        return gathered_logits.flatten(0, 1), gathered_targets.flatten(0, 1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.metadata is not None:
            checkpoint["passt"] = self.metadata

    # ------------------------------------------------------------------------------- optimizers
    def parameter_groups(self) -> list[dict]:
        """The live network's parameters, split into decayed and not decayed groups."""
        exclude = set() if self.weight_decay_all else no_weight_decay_names(self.net)
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (no_decay if name in exclude else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """``trainer.gradient_clip_val``: clip the true gradients, then the fused optimizer steps.

        Lightning refuses to clip under mixed precision with a fused optimizer (the fp16 loss
        scaler would leave unscaling to the fused step, after clipping). Here, with a loss scaler
        (``16-mixed``), the gradients are unscaled first (the scaler's step then passes the fused
        kernel no scale, and still skips steps whose gradients overflowed); without one
        (``bf16-mixed``, ``32-true``) they are clipped as they are. Nothing is read back to the
        host: the norm and the factor stay on the device.
        """
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaler.unscale_(optimizer)
        grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            nn.utils.clip_grad_value_(grads, gradient_clip_val, foreach=True)
        else:
            nn.utils.clip_grad_norm_(grads, gradient_clip_val, foreach=True)

    def configure_optimizers(self):
        optimizer = make_optimizer(self.parameter_groups(), lr=self.lr, adamw=self.adamw)
        if self.lr_lambda is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
