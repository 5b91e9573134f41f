"""A synthetic mini-AudioSet, built with the real prepare script: for ``make demo`` and the tests.

Only classes 0-7 occur and class ``k`` is a tone at ``TONE_HZ[k]`` (plus a little noise), so a
model can actually learn them. The audio is written in several formats (wav 44.1 kHz stereo,
mp3, flac 16 kHz, the ``Y<ytid>`` naming) to exercise decoding and resampling.
"""

from __future__ import annotations

import wave as wavelib
from pathlib import Path

import numpy as np

from audioset.prepare_scripts.create_h5pymp3_dataset import create_hdf5
from helpers.data.audio_io import encode_audio

N_CLASSES = 527
# Only these classes occur in the synthetic data; class k is a tone at TONE_HZ[k].
USED_CLASSES = 8
TONE_HZ = [220.0 * 1.25**k for k in range(USED_CLASSES)]


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav; ``wave`` is [n] (mono) or [n, channels]."""
    frames = np.clip(wave, -1, 1)
    frames = frames[:, None] if frames.ndim == 1 else frames
    with wavelib.open(str(path), "wb") as fh:
        fh.setnchannels(frames.shape[1])
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes((frames * 32767).astype("<i2").tobytes())


def write_audio_file(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write ``wave`` in the format named by the extension of ``path`` (.wav, .mp3 or .flac)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        _write_wav(path, wave, sample_rate)
    elif suffix in (".mp3", ".flac"):
        mono = wave if wave.ndim == 1 else wave.mean(axis=1)
        path.write_bytes(encode_audio(mono, sample_rate, format=suffix[1:]))
    else:
        raise ValueError(f"write_audio_file: unsupported extension {suffix!r}")
    return path


def synthetic_clip(labels: list[int], seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A mixture of the class tones of ``labels`` plus a little noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.01 * rng.standard_normal(t.size)
    for k in labels:
        wave += 0.3 / len(labels) * np.sin(2 * np.pi * TONE_HZ[k] * t + rng.uniform(0, 2 * np.pi))
    return wave.astype(np.float32)


def write_labels_csv(path: Path, n_classes: int = N_CLASSES) -> Path:
    """A label list in the official format, with made-up MIDs ``/m/fake000`` ..."""
    lines = ["index,mid,display_name"]
    lines += [f'{i},/m/fake{i:03d},"Synthetic label {i}, made up"' for i in range(n_classes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_segments_csv(path: Path, rows: list[tuple[str, float, float, list[int]]]) -> Path:
    """A segment CSV in the official format: 3 comment lines, then ``YTID, start, end, "labels"``."""
    lines = [
        "# Segments csv created by audioset/synthetic.py",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels={USED_CLASSES}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for ytid, start, end, labels in rows:
        mids = ",".join(f"/m/fake{k:03d}" for k in labels)
        lines.append(f'{ytid}, {start:.3f}, {end:.3f}, "{mids}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# (prefix, number of clips, output name) of the three splits.
_SPLITS = [
    ("bal", 16, "balanced_train_segments"),
    ("unb", 16, "unbalanced_train_segments"),
    ("evl", 8, "eval_segments"),
]
# File formats cycled through, to exercise decoding/resampling: (extension, sample rate, stereo, "Y" prefix).
_FORMATS = [
    (".wav", 44100, True, False),
    (".mp3", 32000, False, True),
    (".flac", 16000, False, False),
    (".wav", 32000, False, True),
]


def build_mini_audioset(root: Path, clip_seconds: float = 1.5) -> dict:
    """Generate audio + CSVs under ``root`` and build the three HDF5 files with the prepare script.

    Returns a dict with ``base_dir`` (ends with "/"), ``balanced_train_hdf5``,
    ``unbalanced_train_hdf5``, ``eval_hdf5``, ``labels_csv``, ``n_classes`` (527), ``sample_rate``
    (32000), ``clip_length`` (seconds to use, 2: the clips are 1.5 s and get zero-padded),
    ``used_classes`` (8: only classes 0-7 occur, class k is a tone at ``tone_hz[k]``),
    ``tone_hz``, ``n_clips`` (per split), ``audio_dir``, ``segments_csv`` (per split) and
    ``basedataset_config`` (config updates for the sacred ``basedataset`` ingredient).
    """
    rng = np.random.default_rng(1234)
    base_dir = root / "audioset_hdf5s"
    audio_root = root / "audio"
    labels_csv = write_labels_csv(root / "class_labels_indices.csv")
    result: dict = {"segments_csv": {}, "n_clips": {}, "audio_dir": {}}
    for prefix, count, stem in _SPLITS:
        audio_dir = audio_root / stem
        audio_dir.mkdir(parents=True)
        rows = []
        for i in range(count):
            ytid = f"{prefix}{i:08d}"  # 11 characters, like YouTube ids
            # Every split covers every used class; half the clips get a second label.
            labels = sorted({i % USED_CLASSES} | ({(i * 3 + 1) % USED_CLASSES} if i % 2 else set()))
            ext, sample_rate, stereo, y_prefix = _FORMATS[i % len(_FORMATS)]
            wave = synthetic_clip(labels, clip_seconds, sample_rate, rng)
            if stereo:
                wave = np.stack([wave, wave], axis=1)
            write_audio_file(audio_dir / f"{'Y' if y_prefix else ''}{ytid}{ext}", wave, sample_rate)
            rows.append((ytid, 30.0, 30.0 + clip_seconds, labels))
        csv_path = write_segments_csv(root / f"{stem}.csv", rows)
        out = base_dir / "mp3" / f"{stem}_mp3.hdf"
        created = create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)
        if created.failed:
            raise RuntimeError(f"mini_audioset: the prepare script failed on {created.failed}")
        key = {"bal": "balanced_train_hdf5", "unb": "unbalanced_train_hdf5", "evl": "eval_hdf5"}[prefix]
        result[key] = str(out)
        result["segments_csv"][stem] = str(csv_path)
        result["n_clips"][stem] = count
        result["audio_dir"][stem] = str(audio_dir)
    result.update(
        base_dir=str(base_dir) + "/",
        labels_csv=str(labels_csv),
        n_classes=N_CLASSES,
        sample_rate=32000,
        clip_length=2,
        used_classes=USED_CLASSES,
        tone_hz=list(TONE_HZ),
    )
    result["basedataset_config"] = {
        "base_dir": result["base_dir"],
        "balanced_train_hdf5": result["balanced_train_hdf5"],
        "unbalanced_train_hdf5": result["unbalanced_train_hdf5"],
        "eval_hdf5": result["eval_hdf5"],
        "clip_length": result["clip_length"],
        "epoch_len": 32,
    }
    return result
