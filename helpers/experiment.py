"""The sacred Experiment every dataset script builds: config tree, commands, command-line entry.

An experiment script (``ex_audioset.py``, later ESC-50, OpenMIC, FSD50K) only says what differs:
its dataset ingredient and functions, its task (loss/metrics) and a few config values::

    spec = ExperimentSpec(name="audioset", task=MultiLabelTask(), train_set=get_training_set,
                          test_set=get_test_set, train_sampler=get_ft_weighted_sampler)
    ex = build_experiment(spec, ingredients=[basedataset])
    add_configs(ex)                      # named configs of config_updates.py
    if __name__ == "__main__":
        run_cli(ex)

Config tree (``python ex_audioset.py print_config`` shows every key with its default):

* ``models.net.*`` every ``get_model`` argument; ``models.mel.*`` every ``AugmentMelSTFT``
  argument; ``models.ensemble``, ``models.checkpoint``, ``models.checkpoint_swa`` (see
  :mod:`helpers.model_factory`)
* ``trainer.*`` any ``pytorch_lightning.Trainer`` argument; ``wandb.*`` WandbLogger /
  ``wandb.init`` arguments; ``datasets.training.*`` / ``datasets.test.*`` DataLoader arguments;
  ``checkpointing.*`` ModelCheckpoint arguments
* top level: optimisation (``lr``, ``adamw``, ``weight_decay``, schedules), mixup, SWA,
  ``compile``, ``ckpt_path`` (resume), ``output_dir``, ``seed``
* the dataset ingredient (``basedataset.*`` for AudioSet)

Commands: ``main`` (default; train), ``evaluate_only``, ``model_speed_test``, ``test_loaders``,
``test_loaders_train_speed``, plus sacred's ``print_config``, ``print_named_configs``, ``help``.
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sacred import SETTINGS, Experiment, Ingredient
from sacred.utils import apply_backspaces_and_linefeeds
from torch.utils.data import Dataset, Sampler

from helpers import commands
from helpers.assembly import check_config, plain
from helpers.ddp import ddp_processes_from_env, prepare_argv
from helpers.model_factory import signature_defaults
from helpers.tasks import Task
from helpers.trainer_factory import default_precision
from helpers.wandb_logging import default_wandb_mode
from models.passt import get_model
from models.preprocess import AugmentMelSTFT


@dataclass(frozen=True)
class ExperimentSpec:
    """What an experiment script contributes.

    Args:
        name: experiment name (sacred, output folder, wandb project ``passt_<name>``).
        task: loss and metrics (:mod:`helpers.tasks`).
        train_set / test_set: build the datasets; called inside the run, so sacred-captured
            functions of a dataset ingredient work.
        train_sampler: optional training sampler (used when ``datasets.training.weighted_sampler``).
    """

    name: str
    task: Task
    train_set: Callable[[], Dataset]
    test_set: Callable[[], Dataset]
    train_sampler: Callable[[], Sampler] | None = None


# ----------------------------------------------------------------------------- config defaults
def _net_defaults() -> dict:
    # structured patchout as in the paper (40 time columns, 4 frequency rows)
    return {**signature_defaults(get_model), "s_patchout_t": 40, "s_patchout_f": 4}


def shared_config():
    """Defaults shared by every experiment (the original AudioSet values)."""
    models = {
        "net": _net_defaults(),
        "mel": signature_defaults(AugmentMelSTFT),
        "ensemble": [],  # [[arch, fstride, tstride] | {arch, fstride, tstride, checkpoint, swa}, ...]
        "checkpoint": None,  # local weights for models.net (state dict or Lightning .ckpt)
        "checkpoint_swa": False,  # take the net_swa. weights of that Lightning checkpoint
    }
    _ddp = ddp_processes_from_env()
    trainer = dict(
        max_epochs=130,
        accelerator="auto",
        devices=_ddp or 1,  # DDP=N in the environment: N processes
        strategy="ddp" if _ddp > 1 else "auto",
        num_nodes=1,
        precision=default_precision(),  # mixed precision where the hardware has it
        num_sanity_val_steps=0,
        limit_train_batches=None,  # None: all; an int: that many batches per epoch
        limit_val_batches=None,
        check_val_every_n_epoch=1,
        accumulate_grad_batches=1,
        gradient_clip_val=None,
        log_every_n_steps=50,
        benchmark=True,
        use_distributed_sampler=False,  # our samplers shard among DDP ranks themselves
    )
    del _ddp
    _workers = min(16, os.cpu_count() or 1)
    _pin = torch.cuda.is_available()
    datasets = dict(
        training=dict(batch_size=12, num_workers=_workers, shuffle=True, pin_memory=_pin,
                      persistent_workers=True, drop_last=False),
        test=dict(batch_size=20, num_workers=_workers, pin_memory=_pin, persistent_workers=True),
    )
    del _workers, _pin
    wandb = dict(
        project=None,  # None: passt_<experiment name>
        entity=None,
        name=None,  # None: <experiment>-<run folder>
        group=None,
        tags=None,
        notes=None,
        mode=default_wandb_mode(),  # offline unless a wandb account is configured
        save_dir=None,  # None: $WANDB_DIR, else the run folder
        log_model=False,
    )
    checkpointing = dict(
        monitor=None,  # None: val_<task metric>, e.g. val_mAP
        mode=None,  # None: the task's (max for mAP)
        save_top_k=1,
        save_last=True,  # last.ckpt after every epoch: nothing lost on a crash
        dirpath=None,  # None: <run folder>/checkpoints
    )
    speed_test = dict(batch_size=100, steps=100, warmup_steps=10)  # model_speed_test

    lr = 0.00002  # base learning rate
    adamw = True  # AdamW; False: Adam without weight decay
    weight_decay = 0.0001
    weight_decay_all = False  # also decay tokens/positional encodings (net.no_weight_decay()), as the original
    schedule_mode = "exp_lin"  # exp_lin or cos_cyc
    warm_up_len = 5  # epochs of exponential warm-up (cos_cyc: cycle length)
    ramp_down_start = 50  # epoch where the linear ramp-down starts
    ramp_down_len = 50  # epochs of ramp-down
    last_lr_value = 0.01  # final lr multiplier
    use_mixup = True  # mixup of spectrograms within a batch
    mixup_alpha = 0.3  # Beta(alpha, alpha)
    swa = True  # stochastic weight averaging into net_swa
    swa_epoch_start = 50  # first epoch (0-based) folded into the average
    swa_freq = 5  # then every swa_freq epochs
    compile = False  # torch.compile the network
    log_spectrograms = 2  # first training batches with a spectrogram image in wandb
    output_dir = "outputs"  # run folders: <output_dir>/<experiment>/<time>-run<id>
    ckpt_path = None  # resume training from this Lightning checkpoint (e.g. .../checkpoints/last.ckpt)


# ------------------------------------------------------------------------------------ building
def build_experiment(spec: ExperimentSpec, ingredients: Sequence[Ingredient] = (),
                     **config_overrides) -> Experiment:
    """A sacred Experiment with the shared config, the experiment's overrides and all commands."""
    # "sys" capture: "fd" capture hangs at exit while wandb's service process holds the pipes
    SETTINGS.CAPTURE_MODE = "sys"
    ex = Experiment(spec.name, ingredients=list(ingredients))
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars stay readable in cout.txt
    ex.config(shared_config)
    ex.add_config({"wandb": {"project": f"passt_{spec.name}"}})
    if config_overrides:
        ex.add_config(config_overrides)
    _register_commands(ex, spec)
    return ex


def checked(config: Any) -> dict:
    """The run's config as plain Python objects, after failing fast on misspelt library keys."""
    cfg = plain(config)
    check_config(cfg)
    return cfg


def _register_commands(ex: Experiment, spec: ExperimentSpec) -> None:
    @ex.main
    def main(_run, _config, _seed):
        """Train (and validate every epoch); the run's result is the last validation metrics."""
        return commands.train(spec, _run, checked(_config), _seed)

    @ex.command
    def evaluate_only(_run, _config, _seed):
        """Evaluate models.net (or models.ensemble) on the test set; prints and returns the metrics."""
        return commands.evaluate(spec, _run, checked(_config), _seed)

    @ex.command
    def model_speed_test(_config):
        """Measure training speed of the network on random spectrograms (speed_test.* config)."""
        return commands.speed_test(spec, checked(_config))

    @ex.command
    def test_loaders(_config):
        """Load one batch from the training and the test loader and describe it."""
        return commands.first_batches(spec, checked(_config))

    @ex.command
    def test_loaders_train_speed(_config):
        """Time two passes over the training loader."""
        return commands.loader_speed(spec, checked(_config))


def run_cli(ex: Experiment, argv: Sequence[str] | None = None):
    """Run the sacred command line; under DDP only rank 0 is observed (see :mod:`helpers.ddp`)."""
    argv = prepare_argv(sys.argv if argv is None else argv)
    sys.argv = argv  # Lightning's DDP launcher re-runs sys.argv in the child processes
    return ex.run_commandline(argv)
