"""A resume continues the run it comes from: its seed and batch size are the checkpoint's.

The seed fixes the clip order (the sampler's and the loader's shuffle), the per-step random draws
and the clips' augmentations of the rest of the run; the batch size fixes where in the epoch the
run stopped. Every checkpoint records both (under ``"passt"``). A resume (``ckpt_path=``) takes
them from there before the config is final (a sacred config hook, so everything the config
reaches sees them, the dataset's sampler included); a command line that gives another value
stops with an error saying which, before any work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from models.checkpoints import read_checkpoint

#: what a resume must keep: config path -> key of the checkpoint's record
KEPT = {"seed": "seed", "datasets.training.batch_size": "batch_size"}
#: the commands that resume (sacred's name of the default command)
RESUMING_COMMANDS = ("main",)


def _get(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _update(dotted: str, value: Any) -> dict:
    *parents, key = dotted.split(".")
    update: dict = {key: value}
    for part in reversed(parents):
        update = {part: update}
    return update


def resume_updates(config: Mapping, command_name: str, logger: logging.Logger, defaults: Mapping) -> dict:
    """Config updates that make a resume continue its run: the checkpoint's seed and batch size where
    the command line leaves them at their defaults (``defaults``: the config before any update; no
    seed there); an error when it gives other values than the run's."""
    path = config.get("ckpt_path")
    if command_name not in RESUMING_COMMANDS or not path or not os.path.isfile(path):
        return {}  # a missing checkpoint is reported by the command, with what to do
    trust = bool(_get(config, "models.trust_checkpoint"))
    checkpoint = read_checkpoint(path, trust_checkpoint=trust, mmap=True)
    record = checkpoint.get("passt") if isinstance(checkpoint, Mapping) else None
    record = record if isinstance(record, Mapping) else {}
    updates: dict = {}
    for key, recorded in KEPT.items():
        saved, given = record.get(recorded), _get(config, key)
        given = None if given == _get(defaults, key) else given
        if saved is None:
            if key == "seed" and given is None:
                logger.warning("ckpt_path=%s does not record the run's seed: this resume draws a new one, and the rest "
                               "of the run differs from an uninterrupted one. Give the run's seed (seed=...) to "
                               "continue it exactly.", path)
            continue
        if given is None:
            updates.update(_update(key, saved))
            logger.info("resuming with the run's %s=%r (from %s)", key, saved, path)
        elif given != saved:
            raise ValueError(
                f"ckpt_path={path} continues a run trained with {key}={saved!r}, but this command gives {key}={given!r}. "
                f"A resumed run keeps its {key}: it fixes {_why(key)}. Leave {key}= out (the checkpoint's is taken) "
                f"or give {key}={saved!r}; to train with another, start a new run (without ckpt_path).")
    return updates


def _why(key: str) -> str:
    return ("the clip order and every random draw of the rest of the run" if key == "seed"
            else "the position in the epoch where the run stopped")
