"""A PyTorch Dataset over an HDF5 file of mp3 clips, in the original PaSST layout.

File layout (unchanged from the original project, so existing files keep working):

* ``audio_name``: one name per clip, fixed-length (``S20``) or variable-length bytes/strings.
* ``mp3``: one variable-length ``uint8`` array per clip (``h5py.vlen_dtype(np.uint8)``) holding
  the bytes of an mp3 file (any format FFmpeg reads works, mp3 at 32 kHz mono is what
  ``audioset/prepare_scripts`` writes).
* ``target``: ``np.packbits`` of the N boolean labels of each clip, shape ``[clips, ceil(N/8)]``
  ``uint8`` (AudioSet, FSD50K). A plain boolean or float ``[clips, N]`` array is accepted too
  (OpenMIC-2018 stores float32 ``[clips, 40]``: 20 label values then 20 masks).

Items are ``(waveform float32 [1, clip_length], audio_name str, target float32 [n_classes])``
(``clip_length=None``: the whole clip).

Worker safety: the h5py handle is opened on the first ``__getitem__`` in each process (and
re-opened after a fork), and is never pickled, so the dataset can go to DataLoader workers.

Corrupt clips are skipped and counted, or raise with ``strict_decoding=True``
(:class:`helpers.data.corrupt_clips.SkipsUndecodableClips`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import h5py
import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from helpers.data.audio_io import DEFAULT_SAMPLE_RATE, decode_audio, fit_length
from helpers.data.corrupt_clips import SkipsUndecodableClips

__all__ = [
    "Hdf5AudioDataset",
    "Hdf5FileError",
    "check_hdf5_layout",
    "read_targets",
    "decode_name",
    "hdf5_class_names",
    "missing_file_error",
    "open_hdf5",
    "preload_hdf5",
    "require_hdf5",
]

Decoder = Callable[[bytes, int], np.ndarray]


class Hdf5FileError(OSError):
    """An HDF5 file that cannot be opened: truncated (an interrupted copy), damaged, or not HDF5."""


def decode_name(raw: bytes | np.bytes_ | str) -> str:
    """An ``audio_name`` entry (fixed/variable-length bytes or str) as ``str``."""
    if isinstance(raw, (bytes, np.bytes_)):
        return bytes(raw).decode("utf-8", errors="replace").rstrip("\x00")
    return str(raw)


def missing_file_error(path: str | os.PathLike, prepare_hint: str | None) -> FileNotFoundError:
    """The error for an HDF5 file that does not exist, naming the command that creates it.

    ``prepare_hint`` comes from the dataset that uses the file (its prepare command).
    """
    create = (f"Create it with:\n    {prepare_hint}\n" if prepare_hint
              else "Create it with the prepare script of its dataset (see the dataset's README),\n")
    return FileNotFoundError(
        f"HDF5 dataset file not found: {os.fspath(path)!r} (absolute: {os.path.abspath(path)!r}).\n"
        f"{create}or point the config at the right file (e.g. `with basedataset.base_dir=/path/to/hdf5s/`)."
    )


def require_hdf5(path: str | os.PathLike, prepare_hint: str | None) -> str:
    """``path`` as ``str`` if the file exists, else :func:`missing_file_error` naming ``prepare_hint``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise missing_file_error(path, prepare_hint)
    return path


def open_read_only(path: str | os.PathLike) -> h5py.File:
    """``h5py.File(path, "r")`` without HDF5's file lock.

    HDF5 locks every file it opens (a shared ``flock`` even to read). On some Lustre and NFS
    mounts that fails ("unable to lock file") or stalls, and every DataLoader worker of every
    rank opens the files; a dataset that is only read needs no lock. (Same as
    ``HDF5_USE_FILE_LOCKING=FALSE``, for these files only.)
    """
    return h5py.File(path, "r", locking=False)


def open_hdf5(path: str | os.PathLike, prepare_hint: str | None = None) -> h5py.File:
    """:func:`open_read_only`, failing with :class:`Hdf5FileError` that names the file and the fix.

    A file cut short by an interrupted copy is found here at no cost: HDF5 records the file's
    size in its header and refuses to open a shorter file ("truncated file"), whatever the file
    size, so a 100 GB file is checked without reading it. (Damage that keeps the size, e.g. a
    block of zeros, is not found here; clips that then fail to decode are skipped and counted.)
    """
    try:
        return open_read_only(path)
    except OSError as err:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        expected = re.search(r"stored_eof = (\d+)", str(err))
        reason = (f"it is truncated ({size} bytes on disk, {expected[1] if expected else 'more'} in its header): a "
                  "copy or download was probably interrupted" if "truncated" in str(err)
                  else f"it is damaged or not an HDF5 file ({err})")
        fix = f"recreate it with:\n    {prepare_hint}" if prepare_hint else "recreate it with its prepare script"
        raise Hdf5FileError(f"{os.fspath(path)} cannot be read: {reason}. Copy it again from where it was "
                            f"made, or {fix}") from err


def check_hdf5_layout(hf: h5py.File, path: str, n_classes: int) -> int:
    """Validate the datasets of an open file; return the number of clips.

    Raises:
        ValueError: naming ``path`` when a dataset is missing, lengths differ, or the target
            width does not fit ``n_classes``.
    """
    missing = [key for key in ("audio_name", "mp3", "target") if key not in hf]
    if missing:
        raise ValueError(
            f"{path}: missing HDF5 dataset(s) {missing}; expected 'audio_name', 'mp3', 'target' "
            "as the prepare scripts write them"
        )
    n = hf["mp3"].shape[0]
    if hf["audio_name"].shape[0] != n or hf["target"].shape[0] != n:
        raise ValueError(
            f"{path}: datasets have different lengths (audio_name {hf['audio_name'].shape[0]}, "
            f"mp3 {n}, target {hf['target'].shape[0]}); the file is damaged, recreate it"
        )
    target = hf["target"]
    packed_width = math.ceil(n_classes / 8)
    ok = target.ndim == 2 and (
        (target.dtype == np.uint8 and target.shape[1] == packed_width)
        or ((target.dtype == np.bool_ or target.dtype.kind == "f") and target.shape[1] == n_classes)
    )
    if not ok:
        raise ValueError(
            f"{path}: 'target' has shape {target.shape} and dtype {target.dtype}, which does not fit "
            f"n_classes={n_classes} (expected uint8 [clips, {packed_width}] = packbits of {n_classes} "
            f"labels, or bool/float [clips, {n_classes}]). Set n_classes to the number of labels the file "
            "was made with, or recreate the file with the matching label list."
        )
    spare_bits = packed_width * 8 - n_classes
    if target.dtype == np.uint8 and spare_bits and n:
        # labels >= n_classes can only hide in the unused low bits of the last byte (one column read)
        beyond = np.flatnonzero(target[:, packed_width - 1] & np.uint8((1 << spare_bits) - 1))
        if beyond.size:
            raise ValueError(
                f"{path}: {beyond.size} clip(s) (the first at index {beyond[0]}) have labels numbered "
                f"{n_classes} or above, outside n_classes={n_classes}; the file was made with a longer label "
                "list. Set n_classes to that list's length, or recreate the file with the matching label list."
            )
    return n


def read_targets(hf: h5py.File, n_classes: int) -> np.ndarray:
    """Read all targets as packed ``uint8 [clips, ceil(n_classes/8)]`` whichever layout the file uses."""
    target = hf["target"][()]
    if target.dtype == np.bool_:
        return np.packbits(target, axis=-1)
    return target


class Hdf5AudioDataset(SkipsUndecodableClips, Dataset):
    """Clips of one HDF5 file: ``(waveform [1, clip_length] float32, name, target [n_classes] float32)``.

    Args:
        hdf5_path: the file (layout in the module docstring).
        clip_length: samples per item; clips are zero-padded or cut at the end (None: whole clips).
        random_crop: cut longer clips at a random offset instead of keeping their start.
        sample_rate: decode at this rate (resampling if the stored audio differs).
        n_classes: the number of labels packed into ``target``; checked against the file.
        strict_decoding: raise :class:`~helpers.data.corrupt_clips.CorruptClipError` on a corrupt clip
            instead of skipping it.
        prepare_hint: the command that creates the file, shown when it is missing.
        corrupt_log: optional file that every process appends corrupt clips to.
        decoder: ``f(bytes, sample_rate) -> 1-D float32`` (default :func:`decode_audio`); it must
            raise :class:`~helpers.data.audio_io.AudioDecodeError` for undecodable data.
        max_skips: give up after this many corrupt clips in a row (a sign the file is broken).
    """

    def __init__(
        self,
        hdf5_path: str | os.PathLike,
        clip_length: int | None = 10 * DEFAULT_SAMPLE_RATE,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        n_classes: int = 527,
        strict_decoding: bool = False,
        prepare_hint: str | None = None,
        corrupt_log: str | os.PathLike | None = None,
        decoder: Decoder | None = None,
        max_skips: int = 100,
        random_crop: bool = False,
    ) -> None:
        self.hdf5_path = require_hdf5(hdf5_path, prepare_hint)
        self.clip_length = None if clip_length is None else int(clip_length)
        self.random_crop = random_crop
        self.sample_rate = int(sample_rate)
        self.n_classes = int(n_classes)
        self.init_skipping(self.hdf5_path, strict_decoding, corrupt_log, max_skips)
        self.decoder: Decoder = decoder or decode_audio
        # Validate now, so a wrong n_classes fails before training starts; do not keep the handle.
        with open_hdf5(self.hdf5_path, prepare_hint) as hf:
            self._length = check_hdf5_layout(hf, self.hdf5_path, self.n_classes)
        self._hf: h5py.File | None = None
        self._pid: int | None = None
        self._columns: tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset] | None = None

    def __len__(self) -> int:
        return self._length

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_hf"] = None  # h5py handles cannot cross processes
        state["_pid"] = None
        state["_columns"] = None
        return state

    def __del__(self) -> None:
        hf = getattr(self, "_hf", None)
        if hf is not None and self._pid == os.getpid():
            try:
                hf.close()
            except Exception:  # interpreter shutdown: h5py may already be gone
                pass

    def _open_columns(self) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
        """``(mp3, audio_name, target)`` of this process' handle, opening the file if needed.

        The file is (re)opened on first use and on first use after a fork; the datasets are
        looked up once, since that costs more than reading a small item.
        """
        if self._hf is None or self._pid != os.getpid():
            self._hf = open_hdf5(self.hdf5_path)
            self._pid = os.getpid()
            self._columns = (self._hf["mp3"], self._hf["audio_name"], self._hf["target"])
        return self._columns

    def _unpack_target(self, packed: np.ndarray) -> np.ndarray:
        """A stored target row (packed uint8, bool or float) as float32 ``[n_classes]``."""
        if packed.dtype != np.uint8:
            return packed.astype(np.float32)
        return np.unpackbits(packed, count=self.n_classes).astype(np.float32)

    def name(self, index: int) -> str:
        """The ``audio_name`` of clip ``index``."""
        return decode_name(self._open_columns()[1][index])

    def target(self, index: int) -> np.ndarray:
        """The float32 multi-hot target of clip ``index``."""
        return self._unpack_target(self._open_columns()[2][index])

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, np.ndarray]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} clips in {self.hdf5_path}")
        mp3, names, targets = self._open_columns()

        def read(i: int) -> tuple[np.ndarray, str, np.ndarray]:
            wave = fit_length(self.decoder(mp3[i].tobytes(), self.sample_rate), self.clip_length, self.random_crop)
            return wave.reshape(1, -1), decode_name(names[i]), self._unpack_target(targets[i])

        return self.first_decodable(index, self._length, read, lambda i: decode_name(names[i]))


def hdf5_class_names(path: str | os.PathLike) -> list[str] | None:
    """The ``class_names`` attribute our prepare scripts store in a file (None when absent or no file)."""
    if not os.path.isfile(path):
        return None
    with open_read_only(path) as hf:
        names = hf.attrs.get("class_names")
    return None if names is None else [decode_name(n) for n in names]


def preload_hdf5(hdf5_paths: list[str | os.PathLike], chunk: int = 1024) -> int:
    """Read every clip of the files sequentially (warms the OS or network-file-system cache).

    Returns the number of bytes read; shows a progress bar per file.
    """
    total = 0
    for path in hdf5_paths:
        with open_hdf5(require_hdf5(path, None)) as hf:
            mp3 = hf["mp3"]
            n = mp3.shape[0]
            with tqdm(total=n, desc=f"preload {os.path.basename(os.fspath(path))}", unit="clip") as bar:
                for start in range(0, n, chunk):
                    total += sum(a.nbytes for a in mp3[start : start + chunk])
                    bar.update(min(chunk, n - start))
    return total
