"""Tests of helpers/audio_io.py: decoding, resampling, mp3/flac encoding, padding."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from helpers.data.audio_io import (
    AudioDecodeError,
    decode_audio,
    encode_audio,
    encode_mp3,
    load_audio,
    pad_or_truncate,
)


def tone(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(wave: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * sample_rate / wave.size)


def reference_decode(data: bytes) -> np.ndarray:
    """The classic PyAV loop (one to_ndarray per frame), used as the reference."""
    with av.open(io.BytesIO(data)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def test_mp3_round_trip_keeps_length_alignment_and_pitch():
    wave = tone(440.0, 2.0, 32000)
    data = encode_mp3(wave, 32000)
    assert data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")  # an mp3 file
    decoded = decode_audio(data, 32000)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    # The LAME header lets FFmpeg remove the encoder delay: same length, aligned samples.
    assert abs(decoded.size - wave.size) <= 1152
    n = min(decoded.size, wave.size) - 2000
    corr = np.corrcoef(decoded[1000:n], wave[1000:n])[0, 1]
    assert corr > 0.99
    assert dominant_hz(decoded, 32000) == pytest.approx(440.0, abs=2.0)


def test_decode_matches_the_classic_frame_loop_exactly():
    data = encode_mp3(np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32), 32000)
    np.testing.assert_array_equal(decode_audio(data, 32000), reference_decode(data))


def test_decode_resamples_and_downmixes(tmp_path):
    import wave as wavelib

    sr = 16000
    left = tone(1000.0, 1.0, sr)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "x.wav"
    with wavelib.open(str(path), "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(sr)
        fh.writeframes((stereo * 32767).astype("<i2").tobytes())
    decoded = load_audio(path, 32000)
    assert decoded.ndim == 1 and decoded.dtype == np.float32
    assert abs(decoded.size - 32000) <= 64  # 1 s at the new rate
    assert dominant_hz(decoded, 32000) == pytest.approx(1000.0, abs=2.0)
    assert 0.3 < np.abs(decoded).max() < 1.0

    at_8k = decode_audio(path.read_bytes(), 8000)
    assert abs(at_8k.size - 8000) <= 32


def test_decode_accepts_uint8_arrays_like_the_hdf5_layout():
    data = encode_mp3(tone(300.0, 0.5, 32000), 32000)
    as_array = np.frombuffer(data, dtype=np.uint8)
    np.testing.assert_array_equal(decode_audio(as_array), decode_audio(data))


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 50, b"\x00" * 4096])
def test_undecodable_data_raises_audio_decode_error(data):
    with pytest.raises(AudioDecodeError):
        decode_audio(data)


def test_truncated_mp3_in_the_middle_raises():
    data = encode_mp3(tone(440.0, 2.0, 32000), 32000)
    broken = data[: len(data) // 3] + b"\x00" * 4000 + data[2 * len(data) // 3 :]
    with pytest.raises(AudioDecodeError):
        decode_audio(broken)


def test_encode_mp3_rejects_empty_and_accepts_row_vectors():
    with pytest.raises(ValueError):
        encode_mp3(np.zeros(0, dtype=np.float32))
    wave = tone(500.0, 0.5, 32000)
    assert decode_audio(encode_mp3(wave[None, :], 32000)).size == pytest.approx(wave.size, abs=1152)


def test_encode_mp3_bit_rate_changes_size():
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, 64000).astype(np.float32)
    assert len(encode_mp3(wave, 32000, bit_rate=32000)) < len(encode_mp3(wave, 32000, bit_rate=128000))


def test_encode_audio_flac_is_lossless_at_16_bit():
    wave = tone(700.0, 0.25, 16000)
    decoded = decode_audio(encode_audio(wave, 16000, format="flac"), 16000)
    assert decoded.shape == wave.shape
    np.testing.assert_allclose(decoded, wave, atol=2 / 32767)
    with pytest.raises(ValueError, match="unsupported format"):
        encode_audio(wave, 16000, format="m4a")


def test_encode_audio_ogg_opus_decodes_to_the_same_length():
    wave = tone(700.0, 0.5, 48000)
    decoded = decode_audio(encode_audio(wave, 48000, format="ogg"), 48000)
    assert abs(len(decoded) - len(wave)) < 0.02 * 48000  # Opus pads its pre-skip and last frame
    assert np.corrcoef(decoded[2000:20000], wave[2000:20000])[0, 1] > 0.9


def test_pad_or_truncate():
    wave = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_truncate(wave, 8), [0, 1, 2, 3, 4, 0, 0, 0])
    np.testing.assert_array_equal(pad_or_truncate(wave, 3), [0, 1, 2])
    assert pad_or_truncate(wave, 5) is wave
    assert pad_or_truncate(wave, 8).dtype == np.float32
    assert pad_or_truncate(wave[None, :], 7).shape == (1, 7)
    with pytest.raises(ValueError):
        pad_or_truncate(wave, 0)
