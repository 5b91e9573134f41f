"""Data-loading throughput: clips/s of one worker for 10 s AudioSet-style clips.

Measures, side by side in one run and on the same generated HDF5 file (original layout):

* ``helpers.data.audio_io.decode_audio`` (this project: frames collected in an ``av.AudioFifo``,
  converted to NumPy once), and
* an original-style baseline (``av.open(io.BytesIO(...))``, ``frame.to_ndarray()`` per decoded
  frame appended to a list, ``np.concatenate``, resample if the rate differs),

each as "decode only" and as the full training pipeline of one DataLoader worker: HDF5 read +
decode + pad + gain augment + roll + default collate (``num_workers=0``, one torch thread).

    python benchmarks/data_loading.py [--clips 64] [--seconds 10] [--rounds 3]

Prints a markdown table with the machine (CPU model from /proc/cpuinfo, core count).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from helpers.data.audio_io import AudioDecodeError, decode_audio, encode_mp3
from helpers.data.augment import GainAugmentDataset, RollDataset
from helpers.data.hdf5_dataset import Hdf5AudioDataset

SAMPLE_RATE = 32000
N_CLASSES = 527


def original_style_decode(data: bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Baseline: the original project's approach, one ``to_ndarray`` per frame, then concatenate."""
    try:
        container = av.open(io.BytesIO(data))
        stream = next(s for s in container.streams if s.type == "audio")
        chunks = []
        for packet in container.demux(stream):
            for frame in packet.decode():
                chunks.append(frame.to_ndarray().reshape(-1))
        rate = stream.codec_context.sample_rate
        container.close()
    except (av.error.FFmpegError, StopIteration) as err:
        raise AudioDecodeError(str(err)) from err
    wave = np.concatenate(chunks)
    if rate != sample_rate:
        import torchaudio.functional

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return wave


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_hdf5(path: Path, clips: int, seconds: float, seed: int = 0) -> None:
    """Write ``clips`` synthetic 32 kHz mono mp3 clips (tones + noise) in the original layout."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    targets = np.zeros((clips, N_CLASSES), dtype=bool)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("audio_name", data=np.asarray([f"Ybench{i:06d}.mp3".encode() for i in range(clips)], "S20"))
        mp3 = hf.create_dataset("mp3", shape=(clips,), dtype=h5py.vlen_dtype(np.uint8))
        for i in tqdm(range(clips), desc="encoding test clips", unit="clip"):
            freqs = rng.uniform(100, 4000, size=3)
            wave = sum(0.15 * np.sin(2 * np.pi * f * t) for f in freqs) + 0.05 * rng.standard_normal(t.size)
            mp3[i] = np.frombuffer(encode_mp3(wave.astype(np.float32), SAMPLE_RATE), dtype=np.uint8)
            targets[i, rng.choice(N_CLASSES, size=2, replace=False)] = True
        hf.create_dataset("target", data=np.packbits(targets, axis=-1))


def decode_only_rate(path: Path, decoder: Callable[[bytes, int], np.ndarray]) -> float:
    """Clips/s of decoding alone (mp3 bytes already in memory)."""
    with h5py.File(path, "r") as hf:
        blobs = [a.tobytes() for a in hf["mp3"][()]]
    start = time.perf_counter()
    for blob in blobs:
        decoder(blob, SAMPLE_RATE)
    return len(blobs) / (time.perf_counter() - start)


def pipeline_rate(path: Path, decoder: Callable[[bytes, int], np.ndarray], seconds: float, batch_size: int) -> float:
    """Clips/s of one worker: HDF5 read + decode + pad + gain + roll + collate."""
    ds = Hdf5AudioDataset(path, clip_length=int(seconds * SAMPLE_RATE), n_classes=N_CLASSES, decoder=decoder)
    ds = RollDataset(GainAugmentDataset(ds, gain_db=7))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += batch[0].shape[0]
    elapsed = time.perf_counter() - start
    waves, _, targets = batch
    assert waves.shape[1:] == (1, int(seconds * SAMPLE_RATE)) and targets.shape[1] == N_CLASSES
    return count / elapsed


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table; returns the best clips/s per decoder and measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips in the generated HDF5 file")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per decoder (the best is reported)")
    parser.add_argument("--batch-size", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker = one core

    decoders = {"this project (AudioFifo)": decode_audio, "original-style baseline": original_style_decode}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_mp3.hdf"
        make_hdf5(path, args.clips, args.seconds)
        with h5py.File(path, "r") as hf:
            blob = hf["mp3"][0].tobytes()
        ours, theirs = decode_audio(blob), original_style_decode(blob)
        if not np.array_equal(ours, theirs):
            raise SystemExit("benchmarks/data_loading.py: the two decoders disagree; fix helpers/audio_io.py first")
        results: dict[str, dict[str, list[float]]] = {name: {"decode": [], "pipeline": []} for name in decoders}
        for _ in tqdm(range(args.rounds), desc="timed rounds", unit="round"):
            for name, decoder in decoders.items():  # interleaved, so drift affects both alike
                results[name]["decode"].append(decode_only_rate(path, decoder))
                results[name]["pipeline"].append(pipeline_rate(path, decoder, args.seconds, args.batch_size))

    # Best round: other processes on the machine only ever slow a round down.
    best = {name: {k: max(v) for k, v in r.items()} for name, r in results.items()}
    spread = max(statistics.pstdev(v) / statistics.mean(v) for r in results.values() for v in r.values())
    base = best["original-style baseline"]["pipeline"]
    print(f"\nMachine: {cpu_model()}, {os.cpu_count()} cores; PyAV {av.__version__}, torch {torch.__version__}")
    print(f"{args.clips} clips of {args.seconds:g} s, 32 kHz mono mp3; best of {args.rounds} rounds "
          f"(round-to-round spread up to {100 * spread:.0f}%); one process, one torch thread\n")
    print("| decoder | decode only (clips/s) | decode + gain + roll + collate (clips/s per worker) | vs baseline |")
    print("|---|---:|---:|---:|")
    for name, m in best.items():
        print(f"| {name} | {m['decode']:.0f} | {m['pipeline']:.0f} | {m['pipeline'] / base:.2f}x |")
    return best


if __name__ == "__main__":
    main()
