"""Audio decoding/encoding with PyAV (FFmpeg), used by every dataset in the framework.

Public API:

* :func:`decode_audio` -- bytes of any FFmpeg-readable file -> float32 mono waveform at a target rate.
* :func:`load_audio` -- the same for a path on disk; :func:`probe_audio` checks that a file is audio.
* :func:`pad_or_truncate` -- fixed-length clips; :func:`fit_length` also cuts at a random offset.
* :func:`encode_audio` -- float waveform -> mp3, flac or wav bytes (through PyAV); :func:`encode_mp3` for mp3.

Why the decoder is faster than the classic "``frame.to_ndarray()`` per frame, then
``np.concatenate``" loop: an mp3 clip of 10 s has ~280 frames, and making a NumPy array of each
one in Python adds about a quarter to the pure decoding time. Here the decoded frames go into
an :class:`av.AudioFifo` (a C-level buffer) and the whole clip becomes one NumPy array. Files
already in the target format (our 32 kHz mono mp3s) skip the resampler entirely.
``benchmarks/data_loading.py`` measures both approaches side by side.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from helpers.data import draws

__all__ = ["AudioDecodeError", "decode_audio", "load_audio", "pad_or_truncate", "fit_length", "seconds_to_samples",
           "probe_audio", "encode_audio",
           "encode_mp3"]

DEFAULT_SAMPLE_RATE = 32000


class AudioDecodeError(RuntimeError):
    """Raised when audio bytes cannot be decoded (corrupt, empty or not audio)."""


#: the reason given for a file of 0 bytes (a failed copy or download, more often than a bad format)
EMPTY_FILE = "empty file (0 bytes)"


def _needs_resampling(stream: av.audio.stream.AudioStream, sample_rate: int) -> bool:
    """True unless the stream already decodes to planar float32 mono at ``sample_rate``."""
    ctx = stream.codec_context
    return not (
        ctx.sample_rate == sample_rate
        and ctx.format is not None
        and ctx.format.name == "fltp"
        and ctx.layout is not None
        and ctx.layout.nb_channels == 1
    )


def decode_audio(data: bytes | bytearray | memoryview | np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file held in memory to a float32 mono waveform.

    Args:
        data: the encoded file (mp3, wav, flac, m4a, ... anything FFmpeg reads), as bytes or
            a uint8 NumPy array (the layout of the ``mp3`` dataset in our HDF5 files).
        sample_rate: the output sample rate in Hz; the audio is resampled (and down-mixed to
            mono) with FFmpeg's resampler when the file differs.

    Returns:
        A 1-D float32 array of samples in [-1, 1] (nominally).

    Raises:
        AudioDecodeError: if the data holds no decodable audio stream.
    """
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    try:
        try:
            return _decode(data, sample_rate, force_resample=False)
        except _FormatChanged:
            # Rare: the decoder switched sample format/rate mid-stream; the resampler copes.
            return _decode(data, sample_rate, force_resample=True)
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, _FormatChanged) as err:
        raise AudioDecodeError(f"cannot decode audio: {err}") from err


class _FormatChanged(Exception):
    """Internal: a frame did not match the FIFO's format."""


def _decode(data: bytes, sample_rate: int, force_resample: bool) -> np.ndarray:
    """One decoding pass; see :func:`decode_audio`."""
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioDecodeError("no audio stream in the data")
        stream = container.streams.audio[0]
        fifo = av.AudioFifo()
        resampler = None
        if force_resample or _needs_resampling(stream, sample_rate):
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            frames = resampler.resample(frame) if resampler is not None else (frame,)
            for out in frames:
                # The FIFO checks timestamps for continuity; we only want the samples.
                out.pts = None
                try:
                    fifo.write(out)
                except ValueError as err:
                    raise _FormatChanged(str(err)) from err
        if resampler is not None:
            for out in resampler.resample(None):  # flush samples buffered by the resampler
                out.pts = None
                fifo.write(out)
    merged = fifo.read()
    if merged is None or merged.samples == 0:
        raise AudioDecodeError("the data decodes to zero audio samples")
    if resampler is None and (
        merged.format.name != "fltp" or merged.sample_rate != sample_rate or merged.layout.nb_channels != 1
    ):
        raise _FormatChanged("unexpected decoded format")
    return merged.to_ndarray()[0]


def probe_audio(path: str | os.PathLike) -> str | None:
    """None when ``path`` opens as audio and its first frame decodes; else why not (cheap: no full decode)."""
    if not os.path.isfile(path):
        return "file not found"
    if os.path.getsize(path) == 0:
        return EMPTY_FILE
    try:
        with av.open(os.fspath(path), mode="r") as container:
            if not container.streams.audio:
                return "no audio stream"
            for _ in container.decode(container.streams.audio[0]):
                return None
            return "no audio frames"
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as err:
        return f"not readable as audio ({err})"


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file on disk to a float32 mono waveform at ``sample_rate`` (see :func:`decode_audio`)."""
    data = Path(path).read_bytes()
    if not data:  # FFmpeg would only say "Invalid data found when processing input"
        raise AudioDecodeError(EMPTY_FILE)
    return decode_audio(data, sample_rate)


def pad_or_truncate(wave: np.ndarray, length: int) -> np.ndarray:
    """Return ``wave`` (1-D) zero-padded at the end or cut to exactly ``length`` samples."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    n = wave.shape[-1]
    if n == length:
        return wave
    if n > length:
        return wave[..., :length]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, length - n)]
    return np.pad(wave, pad)


def seconds_to_samples(seconds: float | None, sample_rate: int) -> int | None:
    """A clip length in seconds (a config value) as samples; None stays None (whole clips)."""
    if seconds is None:
        return None
    samples = int(round(float(seconds) * int(sample_rate)))
    if samples <= 0:
        raise ValueError(f"clip_length must be positive seconds, got {seconds}")
    return samples


def fit_length(wave: np.ndarray, length: int | None, random_crop: bool = False) -> np.ndarray:
    """``wave`` (1-D) at exactly ``length`` samples: zero-padded at the end, or cut.

    Longer clips are cut from the start, or at a uniformly random offset when ``random_crop``
    (torch's generator, which DataLoader workers seed differently). ``length=None`` keeps the
    whole clip.
    """
    if length is None:
        return wave
    excess = wave.shape[-1] - int(length)
    if random_crop and excess > 0:
        offset = draws.value("crop", lambda: int(torch.randint(excess + 1, ())), neutral=0)
        wave = wave[..., offset:offset + int(length)]
    return pad_or_truncate(wave, int(length))


# Container format -> (encoder, sample format fed to it).
_ENCODERS = {"mp3": ("libmp3lame", "fltp"), "flac": ("flac", "s16"), "wav": ("pcm_s16le", "s16"),
             "ogg": ("libopus", "flt")}


def encode_audio(
    wave: np.ndarray,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    format: Literal["mp3", "flac", "wav", "ogg"] = "mp3",
    bit_rate: int | None = None,
) -> bytes:
    """Encode a mono waveform as a complete mp3 (libmp3lame), flac, wav (16 bit) or Ogg/Opus file, through PyAV.

    Args:
        wave: 1-D float waveform (values in [-1, 1]); a [1, n] array is accepted too.
        sample_rate: the sample rate of ``wave`` and of the file (mp3 supports 8k-48k rates).
        format: ``"mp3"``, ``"flac"``, ``"wav"`` or ``"ogg"`` (Opus: 8, 12, 16, 24 or 48 kHz only);
            flac and wav store ``wave`` clipped to [-1, 1] as 16-bit samples.
        bit_rate: bits per second; None keeps FFmpeg's default for the encoder.

    Returns:
        The bytes of the file. For mp3, FFmpeg writes a LAME/Xing header with the encoder delay,
        so :func:`decode_audio` returns the samples aligned with ``wave``.
    """
    if format not in _ENCODERS:
        raise ValueError(f"encode_audio: unsupported format {format!r}, expected one of {sorted(_ENCODERS)}")
    codec, sample_format = _ENCODERS[format]
    wave = np.asarray(wave).reshape(1, -1)
    if wave.shape[1] == 0:
        raise ValueError("cannot encode an empty waveform")
    if sample_format == "s16":
        samples = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
    else:
        samples = np.ascontiguousarray(wave, dtype=np.float32)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
        frame.sample_rate = sample_rate
        # PyAV re-frames and converts the samples to the encoder's frame size and format.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def encode_mp3(wave: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE, bit_rate: int | None = None) -> bytes:
    """Encode a mono waveform to mp3 bytes with libmp3lame: :func:`encode_audio` with ``format="mp3"``."""
    return encode_audio(wave, sample_rate, "mp3", bit_rate)
