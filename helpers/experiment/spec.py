"""What an experiment script contributes to the shared machinery (a leaf of the experiment layer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset, Sampler

from helpers.training.tasks import Task


@dataclass(frozen=True)
class ExperimentSpec:
    """The parts of an experiment that differ between datasets.

    Args:
        name: experiment name (sacred, output folder, wandb project ``passt_<name>``).
        task: loss, metrics and best-checkpoint metric (:mod:`helpers.training.tasks`).
        train_set / test_set: build the datasets; called inside the run, so sacred-captured
            functions of a dataset ingredient work.
        train_sampler: optional training sampler (used when ``datasets.training.weighted_sampler``).
        class_names: optional; the names of the network's outputs, stored in every checkpoint
            (under ``"passt"``, with the ``models`` config) so predictions can be named later.
    """

    name: str
    task: Task
    train_set: Callable[[], Dataset]
    test_set: Callable[[], Dataset]
    train_sampler: Callable[[], Sampler] | None = None
    class_names: Callable[[], list[str]] | None = None
