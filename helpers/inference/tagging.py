"""Tagging audio files: overlapping windows, scores per window and per file.

A waveform longer than the model's window is cut into windows starting every ``hop`` samples;
the last one is aligned with the end of the audio, so every window has the full length (the
length the model was trained on) and each one is exactly what the model gives for that stretch of
audio on its own. A waveform no longer than the window is one window. Windows are batched.
The whole-file prediction is the mean and the max of the window scores.

:func:`tag_files` decodes files in background workers (any format FFmpeg reads, resampled to
the model's rate, mixed to mono) and yields one :class:`FileResult` per file in order; a file
that cannot be decoded yields a result with ``error`` set instead of stopping the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from helpers.data.audio_files import audio_files_under
from helpers.data.audio_io import AudioDecodeError, load_audio
from helpers.inference.model import InferenceModel

ACTIVATIONS = ("sigmoid", "softmax")


@dataclass
class FileResult:
    """What the model says about one file (times in seconds, scores in class order)."""

    path: str
    duration: float = 0.0
    starts: np.ndarray | None = None  # [windows]
    ends: np.ndarray | None = None  # [windows]
    logits: np.ndarray | None = None  # [windows, classes]
    scores: np.ndarray | None = None  # [windows, classes]: the activation of the logits
    embedding: np.ndarray | None = None  # optional, see tag_files(embed=...)
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean(self) -> np.ndarray:
        """Whole-file scores: the mean over windows."""
        return self.scores.mean(axis=0)

    @property
    def max(self) -> np.ndarray:
        """Whole-file scores: the max over windows."""
        return self.scores.max(axis=0)

    def top(self, k: int, by: str = "mean") -> list[tuple[int, float, float]]:
        """The ``k`` classes with the highest whole-file score ``by`` ("mean" or "max"): (class, mean, max)."""
        mean, peak = self.mean, self.max
        order = np.argsort(-(mean if by == "mean" else peak), kind="stable")[:k]
        return [(int(c), float(mean[c]), float(peak[c])) for c in order]


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Window starts (samples): ``0, hop, 2 hop, ...`` and a last window ending with the audio."""
    if window <= 0 or not 0 < hop <= window:
        raise ValueError(f"need 0 < hop <= window, got hop={hop}, window={window} samples")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window, hop))
    starts.append(n_samples - window)
    return starts


def activation(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores from logits: ``sigmoid`` (multi-label, as AudioSet) or ``softmax`` (one class per clip)."""
    if kind == "sigmoid":
        return logits.sigmoid()
    if kind == "softmax":
        return logits.softmax(dim=-1)
    raise ValueError(f"activation {kind!r}: expected one of {ACTIVATIONS}")


@torch.inference_mode()
def tag_waveform(model: InferenceModel, wave: np.ndarray | torch.Tensor, window: int | None = None,
                 hop: int | None = None, batch_size: int = 8, kind: str = "sigmoid",
                 path: str = "") -> FileResult:
    """Scores of a mono waveform at ``model.sample_rate``, per window (see the module docstring).

    ``window`` and ``hop`` are in samples (default: the model's window and half of it); the window
    may not exceed ``model.max_samples``.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32).flatten()
    window = window or model.window
    hop = hop or max(1, window // 2)
    if window > model.max_samples:
        raise ValueError(f"window of {window} samples is longer than the model takes ({model.max_samples})")
    n = wave.shape[0]
    if n == 0:
        raise ValueError("the waveform is empty")
    sr = model.sample_rate
    notes = ()
    if n < model.min_samples:  # the model pads it: the scores see mostly silence
        notes = (f"{n / sr:.3g} s of audio is shorter than one patch ({model.min_samples / sr:.3g} s): "
                 f"zero-padded to it",)
    starts = window_starts(n, window, hop)
    length = min(window, n)
    logits = []
    for i in range(0, len(starts), batch_size):
        batch = torch.stack([wave[s:s + length] for s in starts[i:i + batch_size]])
        logits.append(model(batch)[0].cpu())
    logits = torch.cat(logits)
    starts_s = np.asarray(starts, dtype=np.float64) / sr
    return FileResult(path=path, duration=n / sr, starts=starts_s, ends=starts_s + length / sr,
                      logits=logits.numpy(), scores=activation(logits, kind).numpy(), notes=notes)


def find_audio_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named directly (any extension) and audio files under folders (:data:`helpers.data.audio_files.AUDIO_EXTENSIONS`, sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += audio_files_under(item)
        else:
            files.append(item)  # missing files are reported with the others
    return files


class _DecodedFiles(Dataset):
    """Decodes each file to a mono waveform; a failure becomes a message, not an exception."""

    def __init__(self, files: Sequence[Path], sample_rate: int) -> None:
        self.files, self.sample_rate = list(files), sample_rate

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None, str | None, tuple[str, ...]]:
        path = self.files[i]
        try:
            wave = load_audio(path, self.sample_rate)
        except (AudioDecodeError, OSError) as err:
            return str(path), None, f"{type(err).__name__}: {err}", ()
        notes = ()
        bad = ~np.isfinite(wave)
        if bad.any():  # float files can hold NaN/inf: score the rest of the audio, say so
            notes = (f"{int(bad.sum())} non-finite samples (NaN/inf) set to 0",)
            wave = np.where(bad, 0.0, wave).astype(np.float32)
        return str(path), wave, None, notes


def _unbatched(item):
    return item


def tag_files(model: InferenceModel, files: Sequence[str | os.PathLike], window: int | None = None,
              hop: int | None = None, batch_size: int = 8, kind: str = "sigmoid", workers: int = 0,
              embed=None) -> Iterator[FileResult]:
    """:func:`tag_waveform` for each file, in order, decoding ahead in ``workers`` processes.

    ``embed``: optional ``f(wave [1, samples], model) -> [1, D]`` whose result is stored in
    :attr:`FileResult.embedding` (e.g. :func:`helpers.inference.hear.get_scene_embeddings`).
    """
    loader = DataLoader(_DecodedFiles([Path(f) for f in files], model.sample_rate), batch_size=None,
                        num_workers=workers, collate_fn=_unbatched)
    for path, wave, error, notes in loader:
        if error is not None:
            yield FileResult(path=path, error=error)
            continue
        result = tag_waveform(model, wave, window, hop, batch_size, kind, path)
        if embed is not None:
            with torch.inference_mode():
                result.embedding = embed(torch.from_numpy(wave)[None], model)[0].cpu().numpy()
        result.notes = notes + result.notes
        yield result
