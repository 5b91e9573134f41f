"""Training items with a teacher's soft targets: offline distillation, and consistent teaching by replay.

Both wrappers go around the augmented training set (under :class:`helpers.data.resumable.SeededItems`)
and add an element to every item: ``teacher`` float32 ``[C + 1]``, the teacher's probabilities
(:func:`soft_targets`) followed by a weight, 1 when the clip has teacher targets and 0 when not
(a clip the store does not hold, or one that failed to decode and was replaced by the next).

* :class:`TeacherTargets` (offline distillation, as EfficientAT): the stored clean logits of the
  clip; when wavmix mixed in another clip, the two clips' probabilities are mixed with the same
  weight, as wavmix mixes the labels (both clips need teacher targets for the weight to be 1).
* :class:`ReplayedDraws` (consistent teaching, as CED): for every item one of the clip's ``R``
  recorded draws is picked (uniformly, from the item's seeded generator, so resumes pick the
  same), its waveform draws are replayed (:mod:`helpers.data.draws`), and the item also carries
  the front end's recorded draws (int64 ``[6]``) for the module's mel front end. The student's
  input is then exactly the teacher's, and the teacher's logits of that input are the targets.

:func:`clip_names` lists a dataset's clip names without decoding any clip.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from helpers.data import draws
from helpers.data.hdf5_dataset import Hdf5AudioDataset, decode_name, open_hdf5
from helpers.data.teacher_store import TeacherStore

__all__ = ["clip_names", "soft_targets", "TeacherTargets", "ReplayedDraws", "ACTIVATIONS"]

#: how a task turns logits into the probabilities it is trained on
ACTIVATIONS = ("sigmoid", "softmax")


def soft_targets(logits: torch.Tensor, activation: str, temperature: float = 1.0) -> torch.Tensor:
    """The teacher's probabilities at ``temperature``: ``sigmoid(logits / T)`` (multi-label) or
    ``softmax(logits / T)`` over the last axis (one class per clip)."""
    scaled = logits.float() / temperature
    if activation == "sigmoid":
        return torch.sigmoid(scaled)
    if activation == "softmax":
        return torch.softmax(scaled, dim=-1)
    raise ValueError(f"unknown teacher activation {activation!r}: expected one of {ACTIVATIONS}")


def _children(ds: Dataset) -> Iterator[Dataset]:
    inner = vars(ds)
    if isinstance(ds, ConcatDataset):
        yield from ds.datasets
    elif inner.get("dataset") is not None:
        yield inner["dataset"]


def clip_names(dataset: Dataset) -> list[str]:
    """The ``audio_name`` of every item of ``dataset``, in index order, read without decoding audio.

    Knows the HDF5 datasets, datasets with a ``names`` list (audio files), concatenations, subsets
    and wrappers with a ``dataset``.
    """
    if isinstance(dataset, Hdf5AudioDataset):
        with open_hdf5(dataset.hdf5_path) as hf:
            return [decode_name(n) for n in hf["audio_name"][()]]
    own = vars(dataset).get("names")  # AudioFileDataset, and any dataset that lists its names
    if isinstance(own, (list, tuple)) and len(own) == len(dataset):
        return list(own)
    if isinstance(dataset, Subset):
        names = clip_names(dataset.dataset)
        return [names[int(i)] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [name for ds in dataset.datasets for name in clip_names(ds)]
    inner = list(_children(dataset))
    if len(inner) == 1 and len(inner[0]) == len(dataset):
        return clip_names(inner[0])
    raise TypeError(f"cannot list the clip names of a {type(dataset).__name__} without loading its items")


class _WithStore(Dataset):
    """Shared by the two wrappers: the dataset, the store and how its logits become targets."""

    def __init__(self, dataset: Dataset, store: TeacherStore, activation: str, temperature: float) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown teacher activation {activation!r}: expected one of {ACTIVATIONS}")
        if temperature <= 0:
            raise ValueError(f"kd.temperature={temperature}: expected a positive number")
        self.dataset, self.store = dataset, store
        self.activation, self.temperature = activation, float(temperature)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ("dataset", "store"):  # not set yet while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _soft(self, row: int, draw: int) -> np.ndarray:
        logits = torch.from_numpy(self.store.logits(row, draw))
        return soft_targets(logits, self.activation, self.temperature).numpy()

    def _teacher(self, soft: np.ndarray | None) -> np.ndarray:
        """``[C + 1]``: the probabilities and weight 1, or zeros and weight 0 (no teacher targets)."""
        if soft is None:
            return np.zeros(self.store.n_classes + 1, np.float32)
        return np.append(soft, np.float32(1.0)).astype(np.float32)


class TeacherTargets(_WithStore):
    """Items ``(wave, name, target, teacher)`` with the stored clean logits of a ``draws=0`` store."""

    def __init__(self, dataset: Dataset, store: TeacherStore, activation: str, temperature: float = 1.0) -> None:
        if store.draws:
            raise ValueError(f"{store.path} records {store.draws} augmented draws per clip: train on it with "
                             f"kd.replay=True (consistent teaching), or store clean logits with kd.draws=0")
        super().__init__(dataset, store, activation, temperature)
        names = clip_names(dataset)
        self.rows = store.rows_of(names)
        if (self.rows < 0).all():
            raise ValueError(f"{store.path} holds none of the {len(names)} training clips (its first names: "
                             f"{store.names[:3].tolist()}; the training set's: {names[:3]})")

    def _clip(self, index: int, name: str) -> np.ndarray | None:
        row = int(self.rows[index])
        if row < 0 or not self.store.valid[row] or self.store.names[row] != name:
            return None
        return self._soft(row, 0)

    def __getitem__(self, index: int):
        with draws.recording() as tape:
            wave, name, target = self.dataset[index]
        soft = self._clip(index, name)
        if tape.values.get("wavmix"):
            partner = self._clip(tape.values["partner"], tape.notes["partner_name"])
            lam = tape.values["lam"]
            soft = None if soft is None or partner is None else lam * soft + (1.0 - lam) * partner
        return wave, name, target, self._teacher(soft)


class ReplayedDraws(_WithStore):
    """Items ``(wave, name, target, teacher, mel_draws)`` replaying one recorded draw of a ``draws=R`` store."""

    def __init__(self, dataset: Dataset, store: TeacherStore, activation: str, temperature: float = 1.0) -> None:
        if not store.draws:
            raise ValueError(f"{store.path} holds clean logits only (kd.draws=0): consistent teaching (kd.replay=True) "
                             f"needs a store of recorded draws (store_teacher_logits with kd.draws=R)")
        super().__init__(dataset, store, activation, temperature)
        names = np.asarray(clip_names(dataset), dtype=str)
        if len(names) != len(store) or not np.array_equal(names, store.names):
            differ = int(np.argmax(names != store.names)) if len(names) == len(store) else None
            where = f"the first difference at clip {differ}" if differ is not None else \
                f"{len(names)} clips against {len(store)}"
            raise ValueError(f"{store.path} was recorded on another training set ({where}): replaying its draws "
                             f"needs the same clips in the same order (the same basedataset config)")

    def __getitem__(self, index: int):
        draw = int(torch.randint(self.store.draws, ()))  # the item's seeded generator: resumes pick the same
        tape, mel = self.store.draw(index, draw)
        with draws.replaying(tape):
            wave, name, target = self.dataset[index]
        ok = bool(self.store.valid[index]) and name == self.store.names[index]
        soft = self._soft(index, draw) if ok else None
        return wave, name, target, self._teacher(soft), mel

