"""What an experiment script contributes to the shared machinery (a leaf of the experiment layer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset, Sampler

from helpers.training.tasks import Task


@dataclass(frozen=True)
class EvalSet:
    """A set evaluated after every training epoch (and by ``evaluate_only``).

    Args:
        name: prefix of its metrics (``valid`` -> ``valid_mAP``, ``valid_loss``).
        dataset: builds the dataset; called inside the run (sacred-captured functions work).
        loader: its DataLoader config, ``datasets.<loader>``; keys it does not set come from
            ``datasets.test``.
    """

    name: str
    dataset: Callable[[], Dataset]
    loader: str = "test"


@dataclass(frozen=True)
class ExperimentSpec:
    """The parts of an experiment that differ between datasets.

    Args:
        name: experiment name (sacred, output folder, wandb project ``passt_<name>``).
        task: loss, metrics and best-checkpoint metric (:mod:`helpers.training.tasks`); or a
            function returning one, called inside the run (when the data decides, e.g. one label
            or several per clip).
        train_set / test_set: build the datasets; called inside the run, so sacred-captured
            functions of a dataset ingredient work. ``test_set`` is the one evaluation set
            ``val`` (metrics ``val_*``, loader ``datasets.test``).
        train_sampler: optional; makes the training sampler from the run's seed (used when
            ``datasets.training.weighted_sampler``; under DDP the seed is rank 0's).
        class_names: optional; the names of the network's outputs, stored in every checkpoint
            (under ``"passt"``, with the ``models`` config) so predictions can be named later.
        eval_sets: instead of ``test_set``, several named evaluation sets, all evaluated every
            epoch; the best checkpoint follows the first.
    """

    name: str
    task: Task | Callable[[], Task]
    train_set: Callable[[], Dataset]
    test_set: Callable[[], Dataset] | None = None
    train_sampler: Callable[[int], Sampler] | None = None
    class_names: Callable[[], list[str]] | None = None
    eval_sets: tuple[EvalSet, ...] = ()

    def __post_init__(self) -> None:
        if (self.test_set is None) == (not self.eval_sets):
            raise ValueError(f"experiment {self.name!r}: give either test_set or eval_sets")

    def evaluation_sets(self) -> tuple[EvalSet, ...]:
        """The named evaluation sets (``test_set`` is the set ``val``)."""
        return self.eval_sets or (EvalSet("val", self.test_set),)

    def get_task(self) -> Task:
        """The task (made now when ``task`` is a function)."""
        return self.task() if callable(self.task) else self.task
