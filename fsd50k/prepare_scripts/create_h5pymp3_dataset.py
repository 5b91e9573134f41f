"""Make the three FSD50K HDF5 files from the Zenodo release.

Usage (from the repository root)::

    python -m fsd50k.prepare_scripts.create_h5pymp3_dataset /data/FSD50K [--download] \\
        [--out-dir audioset_hdf5s/mp3/] [--workers 8]

* The folder holds the release as Zenodo serves it (``FSD50K.ground_truth.zip``,
  ``FSD50K.dev_audio.zip`` + ``.z01``-``.z05``, ``FSD50K.eval_audio.zip`` + ``.z01``) or already
  unpacked (``FSD50K.ground_truth/``, ``FSD50K.dev_audio/``, ``FSD50K.eval_audio/``). Zips are
  unpacked there once (split zips are read part by part: no ``zip -s 0`` needed).
  ``--download`` fetches the missing zips from Zenodo first (about 30 GB).
* Output, in the original's layout: ``FSD50K.train_mp3.hdf`` and ``FSD50K.val_mp3.hdf`` (the
  ``split`` column of ``dev.csv``) and ``FSD50K.eval_mp3.hdf``, with ``audio_name``
  (``<fname>.mp3``), ``mp3`` (whole clips, 32 kHz mono) and ``target`` (packbits of the 200
  labels in ``vocabulary.csv`` order), clips in CSV order; the vocabulary is stored as the
  ``class_names`` attribute.
* Resumable, with a progress bar; clips whose audio is missing or unreadable are listed in
  ``<file>.failed.txt`` (see :mod:`helpers.data.hdf5_writer`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from helpers.data.download import download, extract
from helpers.data.hdf5_writer import PrepareResult, add_encoding_arguments, run_prepare, write_hdf5
from models.labels import read_vocabulary

__all__ = ["ZENODO", "ARCHIVES", "unpack_release", "prepare", "main"]

ZENODO = "https://zenodo.org/record/4060432/files/"
#: the folder each archive unpacks to -> its files on Zenodo (split zips: the parts, then the .zip)
ARCHIVES = {
    "FSD50K.ground_truth": ["FSD50K.ground_truth.zip"],
    "FSD50K.dev_audio": [f"FSD50K.dev_audio.z0{i}" for i in range(1, 6)] + ["FSD50K.dev_audio.zip"],
    "FSD50K.eval_audio": ["FSD50K.eval_audio.z01", "FSD50K.eval_audio.zip"],
}
#: output file -> (ground-truth CSV, value of its split column or None, audio folder)
OUTPUTS = {
    "FSD50K.train_mp3.hdf": ("dev.csv", "train", "FSD50K.dev_audio"),
    "FSD50K.val_mp3.hdf": ("dev.csv", "val", "FSD50K.dev_audio"),
    "FSD50K.eval_mp3.hdf": ("eval.csv", None, "FSD50K.eval_audio"),
}


def unpack_release(source: str | os.PathLike, fetch: bool = False) -> Path:
    """``source`` with the three folders unpacked (downloading missing zips first when ``fetch``)."""
    source = Path(source)
    for folder, files in ARCHIVES.items():
        if (source / folder).is_dir():
            continue
        missing = [name for name in files if not (source / name).is_file()]
        if missing:
            if not fetch:
                raise FileNotFoundError(
                    f"{source} has neither {folder}/ nor {', '.join(missing)}. Download them from "
                    f"https://zenodo.org/record/4060432 into {source} (or pass --download).")
            for name in missing:
                download(f"{ZENODO}{name}?download=1", source / name, f"FSD50K's {name}")
        unpacked = extract(source / files[-1], source / f"{folder}.unpacked")
        if (unpacked / folder).is_dir():  # the zips hold the folder itself
            os.replace(unpacked / folder, source / folder)
            shutil.rmtree(unpacked)
        else:
            os.replace(unpacked, source / folder)
    return source


def read_ground_truth(path: Path, split: str | None, vocabulary: list[str]) -> tuple[list[str], np.ndarray]:
    """``fname``s and packed targets of the rows of ``path`` (those of ``split`` when given)."""
    index = {name: i for i, name in enumerate(vocabulary)}
    fnames, rows = [], []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            if split is not None and row.get("split") != split:
                continue
            labels = [label.strip() for label in row["labels"].split(",") if label.strip()]
            unknown = [label for label in labels if label not in index]
            if unknown:
                raise ValueError(f"{path}:{line}: labels {unknown} are not in vocabulary.csv")
            target = np.zeros(len(vocabulary), dtype=bool)
            target[[index[label] for label in labels]] = True
            fnames.append(row["fname"].strip())
            rows.append(target)
    return fnames, np.packbits(np.asarray(rows, dtype=bool).reshape(-1, len(vocabulary)), axis=-1)


def prepare(source: str | os.PathLike, out_dir: str | os.PathLike, *, fetch: bool = False, sample_rate: int = 32000,
            bit_rate: int | None = None, workers: int = 1, shard_size: int = 500, overwrite: bool = False,
            progress: bool = True) -> list[PrepareResult]:
    """Write the three files into ``out_dir`` (an existing file is kept unless ``overwrite``)."""
    source, out_dir = unpack_release(source, fetch), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ground_truth = source / "FSD50K.ground_truth"
    vocabulary = read_vocabulary(ground_truth / "vocabulary.csv")
    results = []
    for file_name, (csv_name, split, audio_folder) in OUTPUTS.items():
        out = out_dir / file_name
        if out.exists() and not overwrite:
            print(f"{out} already exists; skipped (--overwrite recreates it)")
            continue
        fnames, targets = read_ground_truth(ground_truth / csv_name, split, vocabulary)
        manifest = {"csv_sha1": hashlib.sha1((ground_truth / csv_name).read_bytes()).hexdigest(), "split": split,
                    "sample_rate": sample_rate, "bit_rate": bit_rate}

        def make_tasks(rows: list[int], fnames=fnames, audio=source / audio_folder) -> list[tuple]:
            paths = [audio / f"{fnames[row]}.wav" for row in rows]
            return [(row, os.fspath(p) if p.is_file() else None, sample_rate, bit_rate) for row, p in zip(rows, paths, strict=True)]

        results.append(write_hdf5(
            out, names=[f"{f}.mp3" for f in fnames], targets=targets, manifest=manifest, make_tasks=make_tasks,
            attrs={"sample_rate": sample_rate, "n_classes": len(vocabulary), "class_names": vocabulary,
                   "ground_truth": csv_name, "split": split or "eval"},
            ids=fnames, what=f"clips of {csv_name}", empty_hint=f"check {source / audio_folder}",
            workers=workers, shard_size=shard_size, progress=progress))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fsd50k.prepare_scripts.create_h5pymp3_dataset",
                                     description="Turn the FSD50K release into the three HDF5 files.")
    parser.add_argument("source", help="folder with the Zenodo zips or their unpacked folders")
    parser.add_argument("--download", action="store_true", help="download missing zips from Zenodo (~30 GB)")
    parser.add_argument("--out-dir", default="audioset_hdf5s/mp3/", help="where the HDF5 files go")
    add_encoding_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="recreate existing files")
    args = parser.parse_args(argv)
    return run_prepare(lambda: prepare(args.source, args.out_dir, fetch=args.download, sample_rate=args.sample_rate,
                                       bit_rate=args.bitrate, workers=args.workers, shard_size=args.shard_size,
                                       overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
