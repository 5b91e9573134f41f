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

Errors the user can fix (a bad key or named config, a missing or unreadable file, a bad
checkpoint, no network for a download, a stopped run: :data:`USER_ERRORS`) end the command line
with their message alone; ``-d``/``--debug`` (sacred's flag) shows the traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Sequence

from sacred import SETTINGS, Experiment, Ingredient
from sacred.config.config_dict import ConfigDict
from sacred.utils import NamedConfigNotFoundError, apply_backspaces_and_linefeeds

from helpers.data.audio_io import AudioDecodeError
from helpers.data.corrupt_clips import CorruptClipError
from helpers.experiment import commands, distill, report
from helpers.experiment.config import RunConfig, check_config, default_config, plain, shared_config
from helpers.experiment.ddp import prepare_argv, prepare_environment
from helpers.experiment.loggers import atomic_sacred_files
from helpers.experiment.resume_config import resume_updates
from helpers.experiment.spec import ExperimentSpec
from helpers.training.nonfinite import NonFiniteError
from models.checkpoints import CheckpointError
from models.hub_cache import DownloadError

#: errors whose message says what is wrong and how to fix it: no traceback unless -d/--debug
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, CheckpointError, DownloadError,
               AudioDecodeError, CorruptClipError, NonFiniteError, commands.TrainingStopped)


class UnknownNamedConfigError(ValueError):
    """A word after ``with`` that is neither a named config nor a config file."""


class PasstExperiment(Experiment):
    """sacred's Experiment, whose command line ends a user's mistake with its message (:data:`USER_ERRORS`)."""

    #: set by :func:`run_cli` unless -d/--debug is given; in-process ``ex.run`` calls raise as usual
    brief_errors = False

    def run(self, command_name=None, config_updates=None, named_configs=(), info=None, meta_info=None,
            options=None):
        self.current_run = None  # sacred reads -d from the last run when this one fails before it exists
        try:
            return super().run(command_name, config_updates, named_configs, info, meta_info, options)
        except NamedConfigNotFoundError as err:
            error: Exception = UnknownNamedConfigError(self.unknown_named_configs(named_configs))
            error.__cause__ = err
        except USER_ERRORS as err:
            error = err
        if not self.brief_errors:
            raise error
        print(f"error: {error}\n(-d shows where it came from)", file=sys.stderr)
        sys.exit(1)

    def add_config(self, cfg_or_file=None, **kw_conf):
        """sacred's ``add_config``; a dict becomes a :class:`~helpers.experiment.config.RunConfig` (each run its own copy)."""
        super().add_config(cfg_or_file, **kw_conf)
        added = self.configurations[-1]
        if type(added) is ConfigDict:
            self.configurations[-1] = RunConfig(added._conf)

    def unknown_named_configs(self, requested: Sequence[str]) -> str:
        """What is wrong with the named configs of a command line, with the closest names."""
        known = sorted(name for name, _ in self.gather_named_configs())
        lines = []
        for name in requested:
            if name in known or os.path.isfile(name):
                continue
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            lines.append(f"{name!r} is not a named config (nor a config file).{hint}")
        return " ".join(lines) + " `print_named_configs` lists them; a key needs a value: key=value."


class _NoAddedKeyNotes(logging.Filter):
    """Drops sacred's "Added new config entry" warnings: keys can only be added to the sections that take
    a library's arguments (``trainer.gradient_clip_algorithm``, ...), and check_config has checked them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Added new config entry")


_ADDED_KEY_FILTER = _NoAddedKeyNotes()


def build_experiment(spec: ExperimentSpec, ingredients: Sequence[Ingredient] = ()) -> PasstExperiment:
    """A sacred Experiment with the shared config and all commands; the script adds its own config."""
    # "sys" capture: "fd" capture hangs at exit while wandb's service process holds the pipes
    SETTINGS.CAPTURE_MODE = "sys"
    atomic_sacred_files()  # a full disk must not leave a truncated run.json
    logging.getLogger().addFilter(_ADDED_KEY_FILTER)  # sacred warns on the root logger (once: same object)
    ex = PasstExperiment(spec.name, ingredients=list(ingredients))
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars stay readable in cout.txt
    ex.configurations.append(shared_config(spec.name))

    @ex.config_hook
    def check(config, command_name, logger):
        """Fail on unknown keys, with suggestions, before any command starts; a resume keeps its run's seed."""
        defaults = plain(default_config(ex))
        check_config(plain(config), defaults)
        return resume_updates(plain(config), command_name, logger, defaults)

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
        try:
            return commands.train(spec, _run, plain(_config), _seed)
        except BaseException:
            commands.remove_empty_run_folder(_config)  # a failed run leaves no empty outputs/<dataset>/* folder
            raise

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
    """Run the sacred command line; under DDP only rank 0 is observed (see :mod:`helpers.experiment.ddp`).

    A user's mistake ends with its message alone, unless ``-d``/``--debug`` asks for the traceback.
    """
    prepare_environment()
    argv = prepare_argv(sys.argv if argv is None else argv)
    sys.argv = argv  # Lightning's DDP launcher re-runs sys.argv in the child processes
    ex.brief_errors = not wants_traceback(argv)
    report.command_line = list(argv)  # what a stopped run prints as its resume command
    try:
        return ex.run_commandline(argv)
    finally:
        ex.brief_errors = False  # ex.run in the same process (tests) raises again
        report.command_line = None


def wants_traceback(argv: Sequence[str]) -> bool:
    """Whether sacred's ``-d``/``--debug`` flag is on the command line."""
    return any(arg in ("-d", "--debug") for arg in argv[1:])
