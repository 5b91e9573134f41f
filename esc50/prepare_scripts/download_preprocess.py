"""Make the ESC-50 layout the dataset reads (32 kHz wav) from ESC-50's GitHub release (44.1 kHz).

Usage (from the repository root)::

    python -m esc50.prepare_scripts.download_preprocess [--source ESC-50-master.zip] \\
        [--out-dir audioset_hdf5s/esc50/] [--workers 4]

* ``--source``: the GitHub zip (downloaded from :data:`ESC50_URL` when it does not exist yet) or
  the folder it unpacks to (``ESC-50-master/`` with ``meta/esc50.csv`` and ``audio/*.wav``).
* Output: ``<out-dir>/meta/esc50.csv`` (copied as is) and ``<out-dir>/audio_32k/<filename>`` (every clip
  resampled to 32 kHz, mono, 16-bit wav): the layout of the original's ``esc50.zip``.
* Interrupting is safe: every clip is written under a temporary name, flushed to the disk and
  renamed when complete (:func:`helpers.data.atomic.atomic_write`);
  a rerun converts only the clips still missing. Clips that fail are listed in
  ``<out-dir>/failed.txt`` and summarised.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
from tqdm import tqdm

from esc50.dataset import read_meta
from helpers.data.atomic import PARTIAL_SUFFIX, atomic_write
from helpers.data.audio_io import AudioDecodeError, encode_audio, load_audio
from helpers.data.download import download, extract

__all__ = ["ESC50_URL", "prepare", "main"]

#: ESC-50's GitHub repository as a zip (what "Download ZIP" gives: ESC-50-master.zip)
ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"


def find_release(source: str | os.PathLike) -> Path:
    """The release folder (holding ``meta/esc50.csv``): ``source`` itself, the folder it unpacks to, or inside it."""
    source = Path(source)
    if source.suffix == ".zip":
        source = extract(download(ESC50_URL, source, "ESC-50"), source.with_suffix(""))
    candidates = [source, *sorted(p.parent.parent for p in source.glob("*/meta/esc50.csv"))]
    for folder in candidates:
        if (folder / "meta" / "esc50.csv").is_file():
            return folder
    raise FileNotFoundError(f"{source} holds no meta/esc50.csv; give the ESC-50 zip ({ESC50_URL}) or the folder "
                            "it unpacks to (ESC-50-master/)")


def convert_clip(task: tuple[str, str, int]) -> tuple[str, str | None]:
    """Pool entry point: ``(source wav, output wav, sample rate)`` -> ``(output, None)`` or ``(output, reason)``."""
    src, dst, sample_rate = task
    try:
        data = encode_audio(load_audio(src, sample_rate), sample_rate, format="wav")
    except (AudioDecodeError, OSError, ValueError, av.error.FFmpegError) as err:
        return dst, f"{src}: {err}"
    with atomic_write(dst) as fh:  # a clip on disk is always complete, also after a power cut
        fh.write(data)
    return dst, None


def prepare(source: str | os.PathLike, out_dir: str | os.PathLike, *, sample_rate: int = 32000, workers: int = 1,
            progress: bool = True) -> tuple[int, list[tuple[str, str]]]:
    """Convert the release at ``source`` into the folder ``out_dir``; returns (clips written now, failures as (file, reason))."""
    release, out = find_release(source), Path(out_dir)
    clips = read_meta(release / "meta" / "esc50.csv")
    (out / "audio_32k").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(exist_ok=True)
    shutil.copyfile(release / "meta" / "esc50.csv", out / "meta" / "esc50.csv")
    for stale in (out / "audio_32k").glob(f"*{PARTIAL_SUFFIX}"):  # half-written clips of an interrupted run
        stale.unlink()
    tasks = [(os.fspath(release / "audio" / c.filename), os.fspath(out / "audio_32k" / c.filename), sample_rate)
             for c in clips if not (out / "audio_32k" / c.filename).is_file()]
    failed = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = pool.map(convert_clip, tasks, chunksize=8) if pool else map(convert_clip, tasks)
        for dst, reason in tqdm(results, total=len(tasks), initial=len(clips) - len(tasks), desc="resampling ESC-50",
                                unit="clip", disable=not progress):
            if reason is not None:
                failed.append((os.path.basename(dst), reason))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    failed_path = out / "failed.txt"
    if failed:
        failed_path.write_text("".join(f"{name}\t{reason}\n" for name, reason in failed), encoding="utf-8")
    else:
        failed_path.unlink(missing_ok=True)
    return len(tasks) - len(failed), failed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m esc50.prepare_scripts.download_preprocess",
                                     description="Resample ESC-50 (GitHub release, 44.1 kHz) to the 32 kHz layout.")
    parser.add_argument("--source", default="ESC-50-master.zip",
                        help=f"the GitHub zip (downloaded from {ESC50_URL} if missing) or its unpacked folder")
    parser.add_argument("--out-dir", default="audioset_hdf5s/esc50/", help="output folder (basedataset.base_dir)")
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument("--workers", type=int, default=1, help="conversion processes")
    args = parser.parse_args(argv)
    try:
        written, failed = prepare(args.source, args.out_dir, sample_rate=args.sample_rate, workers=args.workers)
    except KeyboardInterrupt:
        print("\ninterrupted; finished clips are kept -- rerun the same command to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"converted {written} clips into {args.out_dir}")
    if failed:
        print(f"{len(failed)} clip(s) failed, listed in {Path(args.out_dir) / 'failed.txt'}")
        for name, reason in failed[:5]:
            print(f"  {name}: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
