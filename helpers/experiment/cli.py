"""The sacred Experiment every dataset script builds: shared config, commands, command-line entry.

An experiment script (``ex_audioset.py``, ``ex_esc50.py``, ...) only says what differs::

    spec = ExperimentSpec(name="audioset", task=MultiLabelTask(), train_set=get_training_set,
                          test_set=get_test_set, train_sampler=get_ft_weighted_sampler)
    ex = build_experiment(spec, ingredients=[basedataset])
    add_configs(ex)                      # named configs of config_updates.py
    if __name__ == "__main__":
        run_cli(ex)

Commands: ``main`` (default; train), ``evaluate_only``, ``store_teacher_logits``, ``model_speed_test``,
``test_loaders``, ``test_loaders_train_speed``, plus sacred's ``print_config``, ``print_named_configs``, ``help``.
The config is checked once, when sacred has built it and before any command runs
(:func:`helpers.experiment.config.check_config`, as a sacred config hook).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sacred import SETTINGS, Experiment, Ingredient
from sacred.utils import apply_backspaces_and_linefeeds

from helpers.experiment import commands, distill
from helpers.experiment.config import check_config, default_config, plain, shared_config
from helpers.experiment.ddp import prepare_argv
from helpers.experiment.loggers import atomic_sacred_files
from helpers.experiment.spec import ExperimentSpec


def build_experiment(spec: ExperimentSpec, ingredients: Sequence[Ingredient] = ()) -> Experiment:
    """A sacred Experiment with the shared config and all commands; the script adds its own config."""
    # "sys" capture: "fd" capture hangs at exit while wandb's service process holds the pipes
    SETTINGS.CAPTURE_MODE = "sys"
    atomic_sacred_files()  # a full disk must not leave a truncated run.json
    ex = Experiment(spec.name, ingredients=list(ingredients))
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars stay readable in cout.txt
    ex.configurations.append(shared_config(spec.name))

    @ex.config_hook
    def check(config, command_name, logger):
        """Fail on unknown keys, with suggestions, before any command starts."""
        check_config(plain(config), plain(default_config(ex)))
        return {}

    _register_commands(ex, spec)

    # registered after the commands: sacred derives each captured function's seed from its position
    @ex.capture
    def library_sections(trainer, models, datasets, wandb, checkpointing):
        """Tells sacred that these sections accept keys beyond their defaults: their library's
        arguments, which check_config verifies (sacred would reject any added key otherwise)."""

    return ex


def _register_commands(ex: Experiment, spec: ExperimentSpec) -> None:
    @ex.main
    def main(_run, _config, _seed):
        """Train (and validate every epoch); the run's result is the last validation metrics."""
        return commands.train(spec, _run, plain(_config), _seed)

    @ex.command
    def evaluate_only(_run, _config, _seed):
        """Evaluate models.net (or models.ensemble) on the test set; prints and returns the metrics."""
        return commands.evaluate(spec, _run, plain(_config), _seed)

    @ex.command
    def model_speed_test(_config):
        """Measure training speed of the network on random spectrograms (speed_test.* config)."""
        return commands.speed_test(spec, plain(_config))

    @ex.command
    def test_loaders(_config):
        """Load one batch from the training and the test loader and describe it."""
        return commands.first_batches(spec, plain(_config))

    @ex.command
    def test_loaders_train_speed(_config):
        """Time two passes over the training loader."""
        return commands.loader_speed(spec, plain(_config))

    # last: sacred seeds captured functions in order, the earlier commands keep theirs
    @ex.command
    def store_teacher_logits(_run, _config):
        """Run the teacher (kd.teacher, else models) over the training set and store its logits in
        kd.teacher_logits: clean clips, or kd.draws recorded augmentation draws per clip (consistent
        teaching); resumable, DDP=N shards it."""
        return distill.store_teacher_logits(spec, _run, plain(_config))


def run_cli(ex: Experiment, argv: Sequence[str] | None = None):
    """Run the sacred command line; under DDP only rank 0 is observed (see :mod:`helpers.experiment.ddp`)."""
    argv = prepare_argv(sys.argv if argv is None else argv)
    sys.argv = argv  # Lightning's DDP launcher re-runs sys.argv in the child processes
    return ex.run_commandline(argv)
