"""A teacher's logits for every clip of a training set, keyed by clip, in one HDF5 file.

Written by the ``store_teacher_logits`` command of every experiment, read by knowledge
distillation (:mod:`helpers.data.teacher_data`). Layout (``N`` clips, ``R`` recorded draws per clip,
``D = max(R, 1)``, ``C`` classes):

* ``audio_name`` ``[N]``: the clip names of the training set, in its order (row ``i`` is clip ``i``);
* ``valid`` ``[N]`` uint8: 0 where the clip could not be read as itself (it failed to decode and was
  replaced by the next one): no teacher targets for it;
* the logits, either ``logits`` ``[N, D, C]`` float16 (all of them), or the ``k`` largest as
  ``topk_values`` ``[N, D, k]`` float16 and ``topk_indices`` ``[N, D, k]`` int16 plus ``rest``
  ``[N, D]`` float16, the mean of the other ``C - k`` logits, which stands in for each of them;
* with ``R > 0`` (consistent teaching): what made the input of each draw, ``draws`` ``[N, R]`` of
  :data:`DRAW_DTYPE` (one read per item): a field per waveform draw of :mod:`helpers.data.draws`
  (:data:`TAPE_FIELDS`; a draw that did not happen holds its field's "absent" value) and ``mel``,
  int16 ``[6]``, the front end's band shifts and SpecAugment masks (``models.preprocess.MEL_DRAW_FIELDS``);
* attributes: ``format``, ``version``, ``n_classes``, ``draws`` (R), ``topk`` (0: all), ``settings``
  (JSON: the teacher, the seed, the augmentation and front-end config the draws follow).

``R = 0`` stores one clean forward per clip (no augmentation), as offline distillation does.

Writing is resumable and shardable (:class:`StoreWork`): the rows are cut into chunks of
:data:`CHUNK_ROWS`; chunk ``c`` belongs to DDP rank ``c % world_size``; every finished chunk is
written atomically into ``<file>.parts/``, so a killed run loses at most the chunk it was on, and a
run with any number of processes continues where any earlier one stopped. When every chunk is
there, they are merged, in row order, into the file. Each chunk depends only on its rows, the
seed and the teacher: one process and ``DDP=N`` give the same file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from helpers.data.atomic import atomic_write, partial_path, replace_durably
from helpers.data.hdf5_dataset import decode_name, open_hdf5

__all__ = ["FORMAT", "CHUNK_ROWS", "TAPE_FIELDS", "DRAW_DTYPE", "StoreWork", "TeacherStore", "bytes_per_clip", "encode_tape",
           "plain_settings"]

FORMAT = "passt-teacher-logits"
VERSION = 1
#: rows per chunk of work, by default (what a kill loses at most, per process)
CHUNK_ROWS = 256


@dataclass(frozen=True)
class TapeField:
    """How a named waveform draw is stored: its dtype, the value meaning "not drawn", its Python type."""

    dtype: str
    absent: Any
    kind: type


#: the waveform draws of :mod:`helpers.data.draws` (named by the augmentations that draw them)
TAPE_FIELDS: dict[str, TapeField] = {
    "crop": TapeField("int32", -1, int),
    "gain_db": TapeField("int8", -128, int),
    "roll": TapeField("int32", np.iinfo(np.int32).min, int),
    "wavmix": TapeField("int8", -1, bool),
    "partner": TapeField("int32", -1, int),
    "lam": TapeField("float32", np.nan, float),
    "partner.crop": TapeField("int32", -1, int),
    "partner.gain_db": TapeField("int8", -128, int),
    "partner.roll": TapeField("int32", np.iinfo(np.int32).min, int),
}


#: one recorded draw: the waveform draws and the front end's (``mel``: ``models.preprocess.MEL_DRAW_FIELDS``)
DRAW_DTYPE = np.dtype([(name, field.dtype) for name, field in TAPE_FIELDS.items()] + [("mel", np.int16, (6,))])


def _absent(field: TapeField, value: Any) -> bool:
    return bool(np.isnan(value)) if field.kind is float else int(value) == field.absent


def encode_tape(values: dict[str, Any]) -> dict[str, np.ndarray]:
    """One item's recorded draws as a 0-d array per field of :data:`TAPE_FIELDS` (absent ones marked)."""
    unknown = set(values) - set(TAPE_FIELDS)
    if unknown:
        raise ValueError(f"augmentation draws {sorted(unknown)} have no column in the teacher store; "
                         f"add them to helpers.data.teacher_store.TAPE_FIELDS")
    out = {}
    for name, field in TAPE_FIELDS.items():
        value = values.get(name, field.absent)
        out[name] = np.asarray(int(value) if field.kind is bool else value, dtype=field.dtype)
    return out


def decode_tape(columns: dict[str, Any]) -> dict[str, Any]:
    """The recorded draws of one item (absent ones left out), as the augmentations drew them."""
    values = {}
    for name, field in TAPE_FIELDS.items():
        value = columns[name]
        if not _absent(field, value):
            values[name] = field.kind(value)
    return values


def plain_settings(settings: dict | None) -> dict:
    """``settings`` as the store keeps them (JSON types; what JSON cannot hold as its string)."""
    return json.loads(json.dumps(settings or {}, sort_keys=True, default=str))


def bytes_per_clip(n_classes: int, draws: int, topk: int | None) -> int:
    """Bytes a clip takes in the store: its logits (or top-k) per draw, plus what made each draw's input."""
    per_draw = 2 * n_classes if not topk else 2 * topk + 2 * topk + 2
    if draws:
        per_draw += DRAW_DTYPE.itemsize
    return max(draws, 1) * per_draw + 1  # + valid


# --------------------------------------------------------------------------------------- writing
class StoreWork:
    """The partial work of one store file: which chunks are done, a buffer for the chunk being filled.

    Args:
        path: the store file to make.
        n_rows: clips of the training set.
        n_classes: the teacher's outputs.
        draws: recorded draws per clip (0: one clean forward).
        topk: keep the ``topk`` largest logits (None or 0: all).
        settings: what the result depends on (teacher, seed, augmentations); partial work made
            with other settings is refused rather than mixed in.
        chunk_rows: rows per chunk.
    """

    def __init__(self, path: str | os.PathLike, n_rows: int, n_classes: int, draws: int = 0,
                 topk: int | None = None, settings: dict | None = None, chunk_rows: int = CHUNK_ROWS) -> None:
        if topk is not None and topk and not 0 < topk < n_classes:
            raise ValueError(f"kd.topk={topk}: expected 1 to {n_classes - 1} (the teacher has {n_classes} "
                             f"outputs), or None to keep all")
        if chunk_rows < 1:
            raise ValueError(f"kd.chunk_rows={chunk_rows}: expected at least 1")
        if draws < 0:
            raise ValueError(f"kd.draws={draws}: expected 0 (one clean forward per clip) or more")
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.n_rows, self.n_classes, self.draws, self.topk = int(n_rows), int(n_classes), int(draws), int(topk or 0)
        self.depth = max(self.draws, 1)
        self.chunk_rows = int(chunk_rows)
        self.settings = plain_settings(settings)
        self.n_chunks = -(-self.n_rows // self.chunk_rows)
        self._buffers: dict[int, dict[str, Any]] = {}

    # ---------------------------------------------------------------------------------- planning
    def job_file(self) -> Path:
        return self.parts / "job.json"

    def _job(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "n_rows": self.n_rows, "n_classes": self.n_classes,
                "draws": self.draws, "topk": self.topk, "chunk_rows": self.chunk_rows, "settings": self.settings}

    def begin(self) -> None:
        """Create ``<file>.parts/`` with the job description, or check that the partial work there is of this job."""
        job = self._job()
        if self.job_file().is_file():
            earlier = json.loads(self.job_file().read_text())
            if earlier != job:
                changed = sorted(k for k in set(job) | set(earlier) if job.get(k) != earlier.get(k))
                raise ValueError(f"{self.parts} holds partial work made with other settings ({', '.join(changed)} "
                                 f"differ): continue it with the same command, or delete that folder to start over")
            return
        with atomic_write(self.job_file()) as f:
            f.write(json.dumps(job, indent=1, sort_keys=True).encode())

    def chunk_file(self, chunk: int) -> Path:
        return self.parts / f"chunk-{chunk:06d}.npz"

    def done_chunks(self) -> set[int]:
        return {c for c in range(self.n_chunks) if self.chunk_file(c).is_file()}

    def rows_of(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n_rows))

    def pending_chunks(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """The chunks of ``rank`` (``c % world_size == rank``) not written yet."""
        done = self.done_chunks()
        return [c for c in range(rank, self.n_chunks, world_size) if c not in done]

    def jobs(self, chunks: Sequence[int]) -> list[int]:
        """Job numbers ``row * D + draw`` of ``chunks``, in order."""
        return [row * self.depth + d for c in chunks for row in self.rows_of(c) for d in range(self.depth)]

    # ----------------------------------------------------------------------------------- writing
    def add(self, rows: np.ndarray, draw: np.ndarray, valid: np.ndarray, logits: np.ndarray,
            tape: dict[str, np.ndarray] | None = None, mel: np.ndarray | None = None) -> list[int]:
        """Buffer the results of some jobs; write the chunks they complete. Returns the chunks written."""
        logits = np.asarray(logits, dtype=np.float32)
        written = []
        for i, (row, d) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(draw).tolist(), strict=True)):
            chunk = row // self.chunk_rows
            buf = self._buffers.get(chunk)
            if buf is None:
                buf = self._buffers[chunk] = self._empty(len(self.rows_of(chunk)))
            at = row - chunk * self.chunk_rows
            buf["valid"][at] = bool(valid[i])
            self._put_logits(buf, at, d, logits[i])
            if self.draws:
                record = buf["draws"][at, d]
                for name in TAPE_FIELDS:
                    record[name] = tape[name][i]
                record["mel"] = mel[i]
            buf["_filled"] += 1
            if buf["_filled"] == buf["valid"].shape[0] * self.depth:
                self._write(chunk, self._buffers.pop(chunk))
                written.append(chunk)
        return written

    def _empty(self, n: int) -> dict[str, Any]:
        buf: dict[str, Any] = {"_filled": 0, "valid": np.zeros(n, np.uint8)}
        if self.topk:
            buf["topk_values"] = np.zeros((n, self.depth, self.topk), np.float16)
            buf["topk_indices"] = np.zeros((n, self.depth, self.topk), np.int16)
            buf["rest"] = np.zeros((n, self.depth), np.float16)
        else:
            buf["logits"] = np.zeros((n, self.depth, self.n_classes), np.float16)
        if self.draws:
            buf["draws"] = np.zeros((n, self.draws), DRAW_DTYPE)
            for name, field in TAPE_FIELDS.items():
                buf["draws"][name] = field.absent
        return buf

    def _put_logits(self, buf: dict[str, Any], at: int, d: int, logits: np.ndarray) -> None:
        if logits.shape != (self.n_classes,):
            raise ValueError(f"the teacher gave {logits.shape[-1]} logits per clip, the store expects {self.n_classes}")
        if not self.topk:
            buf["logits"][at, d] = logits
            return
        # a stable order, so that ties pick the same classes in every run
        top = np.argsort(-logits, kind="stable")[: self.topk]
        buf["topk_values"][at, d] = logits[top]
        buf["topk_indices"][at, d] = top
        buf["rest"][at, d] = (logits.sum(dtype=np.float64) - logits[top].sum(dtype=np.float64)) / (self.n_classes - self.topk)

    def _write(self, chunk: int, buf: dict[str, Any]) -> None:
        data = io.BytesIO()
        np.savez(data, **{k: v for k, v in buf.items() if not k.startswith("_")})
        with atomic_write(self.chunk_file(chunk)) as f:
            f.write(data.getvalue())

    # ----------------------------------------------------------------------------------- merging
    def missing_chunks(self) -> list[int]:
        return sorted(set(range(self.n_chunks)) - self.done_chunks())

    def merge(self, names: Sequence[str], attrs: dict[str, Any] | None = None) -> Path:
        """Write the store file from all chunks (in row order), atomically; remove ``<file>.parts/``."""
        if len(names) != self.n_rows:
            raise ValueError(f"{len(names)} clip names for {self.n_rows} rows")
        missing = self.missing_chunks()
        if missing:
            raise RuntimeError(f"{len(missing)} of {self.n_chunks} chunks are not in {self.parts} yet (the first: "
                               f"{missing[:5]}); run the same command again to compute them")
        tmp = partial_path(self.path)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w", track_order=False) as hf:
            hf.attrs.update({"format": FORMAT, "version": VERSION, "n_classes": self.n_classes, "draws": self.draws,
                             "topk": self.topk, "settings": json.dumps(self.settings, sort_keys=True),
                             **(attrs or {})})
            hf.create_dataset("audio_name", data=np.asarray(list(names), dtype=object),
                              dtype=h5py.string_dtype(), track_times=False)
            datasets: dict[str, h5py.Dataset] = {}
            for chunk in range(self.n_chunks):
                rows = self.rows_of(chunk)
                with np.load(self.chunk_file(chunk)) as part:
                    for name in part.files:
                        array = part[name]
                        if name not in datasets:
                            datasets[name] = hf.create_dataset(name, shape=(self.n_rows, *array.shape[1:]),
                                                               dtype=array.dtype, track_times=False)
                        datasets[name][rows.start:rows.stop] = array
        replace_durably(tmp, self.path)
        shutil.rmtree(self.parts)
        return self.path


# --------------------------------------------------------------------------------------- reading
class TeacherStore:
    """A store file, read by row and draw (memory-mapped lazily in each process).

    Attributes:
        names: the clip names, row order (``numpy`` str array).
        valid: bool ``[N]``, rows with teacher logits.
        n_classes, draws (``R``), topk (0: all logits), settings (dict).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            parts = self.path + ".parts"
            more = (f" ({parts} holds an unfinished run: run store_teacher_logits again to finish it)"
                    if os.path.isdir(parts) else " (make it with the store_teacher_logits command)")
            raise FileNotFoundError(f"teacher logits not found: {self.path}{more}")
        with open_hdf5(self.path) as hf:
            if hf.attrs.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not a teacher-logits store (no format attribute {FORMAT!r})")
            self.n_classes = int(hf.attrs["n_classes"])
            self.draws = int(hf.attrs["draws"])
            self.topk = int(hf.attrs["topk"])
            self.settings = json.loads(hf.attrs["settings"])
            self.names = np.asarray([decode_name(n) for n in hf["audio_name"][()]], dtype=str)
            self.valid = hf["valid"][()].astype(bool)
        self._arrays: dict[str, np.ndarray] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None, "_pid": None}  # opened again in each process

    def _data(self) -> dict[str, np.ndarray]:
        """The numeric datasets, memory-mapped: the file writes them contiguous and uncompressed, so a
        row is read straight from the page cache (an h5py read costs ~100x more per item)."""
        if self._arrays is None or self._pid != os.getpid():
            arrays = {}
            with open_hdf5(self.path) as hf:
                for name in ("logits", "topk_values", "topk_indices", "rest", "draws"):
                    if name in hf:
                        ds = hf[name]
                        offset = ds.id.get_offset()
                        arrays[name] = ds[()] if offset is None else \
                            np.memmap(self.path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """The row of each name (-1 for names the store does not hold)."""
        index = {name: row for row, name in enumerate(self.names.tolist())}
        return np.asarray([index.get(name, -1) for name in names], dtype=np.int64)

    def logits(self, row: int, draw: int = 0) -> np.ndarray:
        """float32 ``[C]`` logits of ``row``'s ``draw`` (top-k stores: the others are the stored mean)."""
        data = self._data()
        if not self.topk:
            return data["logits"][row, draw].astype(np.float32)
        out = np.full(self.n_classes, np.float32(data["rest"][row, draw]), dtype=np.float32)
        out[data["topk_indices"][row, draw].astype(np.int64)] = data["topk_values"][row, draw]
        return out

    def draw(self, row: int, draw: int) -> tuple[dict[str, Any], np.ndarray]:
        """What made ``row``'s ``draw``: the waveform draws (for :func:`helpers.data.draws.replaying`) and
        the front end's, int64 ``[6]``."""
        record = self._data()["draws"][row, draw]
        return decode_tape({name: record[name] for name in TAPE_FIELDS}), record["mel"].astype(np.int64)

    def size_per_clip(self) -> float:
        """Bytes of the file per clip."""
        return os.path.getsize(self.path) / max(len(self), 1)
