"""Commands that take a checkpoint build the network it holds, and say which keys that took.

``models.checkpoint`` (fine-tuning from it, ``evaluate_only``, ``model_speed_test``) and the
``checkpoint`` of ``models.ensemble`` members: a checkpoint written by this framework's training
carries its ``models`` config, and the keys that shape its weights come from there
(:func:`models.build.adopt_checkpoint_networks`), whatever the command line or the experiment's
defaults say. ``inference.py`` rebuilds checkpoints the same way.

Evaluation also checks that the checkpoint's outputs are the data's classes: a different count
or order would score a network against the wrong labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from models.build import adopt_checkpoint_networks
from models.checkpoints import CheckpointError

_logger = logging.getLogger(__name__)

#: how many class names an error shows
SHOWN_CLASSES = 12


def networks_from_checkpoints(cfg: dict[str, Any], evaluating: bool = False,
                              class_names: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``cfg`` with the networks of the checkpoints it names; and what was taken (for sacred's ``info``).

    ``evaluating``: the checkpoints' class counts (and names, where both the checkpoint and the
    data have them: ``class_names``) must be the data's.
    """
    models, taken, records = adopt_checkpoint_networks(cfg["models"])
    if taken:
        where = ", ".join(records)
        _logger.info("The network comes from %s, as it was trained: took %s from it", where,
                     ", ".join(f"{key}={new!r} (configured: {old!r})" for key, (old, new) in taken.items()))
    elif records:
        _logger.info("The configured network is the one %s holds", ", ".join(records))
    if evaluating:
        for path, record in records.items():
            check_outputs(path, record, _configured_classes(models, path), class_names)
    return {**cfg, "models": models}, {key: new for key, (_, new) in taken.items()}


def _configured_classes(models: dict[str, Any], path: str) -> int:
    """The outputs configured for the network built from ``path`` (the member's own, if it sets them)."""
    for entry in models.get("ensemble") or []:
        if isinstance(entry, dict) and entry.get("checkpoint") == path and "n_classes" in entry:
            return int(entry["n_classes"])
    return int(models["net"].get("n_classes", 527))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_CLASSES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN_CLASSES else "")


def check_outputs(path: str, record: dict[str, Any], n_classes: int, class_names: Sequence[str] | None) -> None:
    """Fail when the checkpoint's outputs are not the evaluated data's classes."""
    trained = record["models"].get("net", {}).get("n_classes")
    trained_names = record.get("class_names")
    if trained is not None and int(trained) != n_classes:
        names = f" ({_names(trained_names)})" if trained_names else ""
        raise CheckpointError(
            f"{path} has {trained} outputs{names}, but the data to evaluate has {n_classes} classes: its heads "
            f"would be new, untrained ones. Evaluate it on the data it was trained on.")
    if trained_names and class_names and list(trained_names) != list(class_names):
        raise CheckpointError(
            f"{path} was trained on the classes {_names(trained_names)}, in this order; the data to evaluate has "
            f"{_names(list(class_names))}. Its outputs would be scored against the wrong labels: give the data "
            f"the checkpoint's classes in its order (own data: basedataset.classes=[...]).")
