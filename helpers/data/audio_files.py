"""A PyTorch Dataset over audio files on disk (ESC-50's wav folder, a researcher's own clips).

Items are ``(waveform float32 [1, clip_length], name, target float32 [classes])``, like the
HDF5 datasets, so the same augmentation wrappers, loaders and tasks apply. Files are decoded with
PyAV (any format FFmpeg reads), resampled to ``sample_rate`` and mixed down to mono.

:func:`unreadable_files` checks a list of files before training (missing, or not audio), so a bad
file is reported by name at start-up instead of in the middle of an epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from helpers.data.audio_io import DEFAULT_SAMPLE_RATE, AudioDecodeError, fit_length, load_audio, probe_audio
from helpers.data.corrupt_clips import SkipsUndecodableClips

__all__ = ["AUDIO_EXTENSIONS", "AudioFileDataset", "audio_files_under", "unreadable_files"]

#: extensions taken as audio when a folder is searched (files named directly may have any extension)
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff",
                              ".webm", ".mp4", ".mkv", ".mov", ".mka", ".au"})


def audio_files_under(folder: str | os.PathLike) -> list[Path]:
    """The audio files under ``folder`` (by extension, searched recursively, sorted), hidden ones left out
    (names starting with a dot: e.g. macOS's ``._x.wav`` resource files, which are not audio)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def unreadable_files(paths: Sequence[str | os.PathLike], progress: bool = True) -> list[tuple[str, str]]:
    """``(path, reason)`` of every file that is missing or does not open as audio (header + first frame)."""
    bad = []
    for path in tqdm(paths, desc="checking audio files", unit="file", disable=not progress or len(paths) < 200):
        reason = probe_audio(path)
        if reason is not None:
            bad.append((os.fspath(path), reason))
    return bad


class AudioFileDataset(SkipsUndecodableClips, Dataset):
    """Clips read from audio files.

    Args:
        paths: one audio file per item.
        targets: ``[items, classes]`` float targets (one-hot or multi-hot).
        names: the name of each item (default: the file names).
        clip_length: samples per item; shorter clips are zero-padded at the end (None: whole clips).
        sample_rate: decode at this rate.
        random_crop: cut longer clips at a random offset instead of keeping their start.
        missing_hint: appended to the error when files do not exist (e.g. the prepare command).
        strict_decoding / corrupt_log / max_skips: what a file that fails to decode does: skipped
            and counted by default (:class:`~helpers.data.corrupt_clips.SkipsUndecodableClips`).

    Raises:
        FileNotFoundError: some files do not exist (all are checked at once; the error names them).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], targets: np.ndarray, names: Sequence[str] | None = None,
                 clip_length: int | None = 10 * DEFAULT_SAMPLE_RATE, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 random_crop: bool = False, missing_hint: str = "", strict_decoding: bool = False,
                 corrupt_log: str | os.PathLike | None = None, max_skips: int = 100) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.targets = np.asarray(targets, dtype=np.float32)
        if self.targets.ndim != 2 or len(self.targets) != len(self.paths):
            raise ValueError(f"targets must be [{len(self.paths)}, classes], got {self.targets.shape}")
        self.names = list(names) if names is not None else [os.path.basename(p) for p in self.paths]
        self.clip_length, self.sample_rate, self.random_crop = clip_length, int(sample_rate), random_crop
        self.n_classes = self.targets.shape[1]
        folders = sorted({os.path.dirname(p) for p in self.paths})
        self.init_skipping(folders[0] if len(folders) == 1 else f"{len(folders)} folders", strict_decoding,
                           corrupt_log, max_skips)
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FileNotFoundError(f"{len(missing)} of {len(self.paths)} audio files not found: {shown}. {missing_hint}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, np.ndarray]:
        def read(i: int) -> tuple[np.ndarray, str, np.ndarray]:
            try:
                wave = load_audio(self.paths[i], self.sample_rate)
            except (AudioDecodeError, OSError) as err:  # OSError: the file went away or cannot be read
                raise AudioDecodeError(f"{self.paths[i]}: {err}") from err
            return fit_length(wave, self.clip_length, self.random_crop).reshape(1, -1), self.names[i], self.targets[i].copy()

        return self.first_decodable(index, len(self.paths), read, self.names.__getitem__)
