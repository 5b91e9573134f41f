"""Make the two OpenMIC-2018 HDF5 files from the official archive.

Usage (from the repository root)::

    python -m openmic.prepare_scripts.download_preprocess [--source openmic-2018-v1.0.0.tgz] \\
        [--out-dir audioset_hdf5s/mp3/] [--workers 8]

* ``--source``: the archive (downloaded from :data:`OPENMIC_URL` when it does not exist yet;
  unpacked next to it once) or the unpacked folder (``openmic-2018/`` with ``openmic-2018.npz``,
  ``partitions/split01_{train,test}.csv`` and ``audio/*/<sample_key>.ogg``).
* Output, in the original's layout: ``openmic_train.csv_mp3.hdf`` and ``openmic_test.csv_mp3.hdf``
  with ``audio_name`` (``<sample_key>.mp3``), ``mp3`` (32 kHz mono) and ``target`` (float32
  ``[clips, 40]``: ``Y_true`` then ``Y_mask``), clips in the order of the split CSV. Clips without
  any annotation are left out, as the original did. The class names (``class-map.json``) are
  stored as the ``class_names`` attribute.
* Resumable, with a progress bar; clips whose audio is missing or unreadable are listed in
  ``<file>.failed.txt`` (see :mod:`helpers.data.hdf5_writer`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from helpers.data.download import download, extract
from helpers.data.hdf5_writer import PrepareResult, add_encoding_arguments, run_prepare, write_hdf5

__all__ = ["OPENMIC_URL", "SPLITS", "prepare", "main"]

OPENMIC_URL = "https://zenodo.org/record/1432913/files/openmic-2018-v1.0.0.tgz?download=1"
#: split CSV of the official partition -> output file name (the original's names)
SPLITS = {"split01_train.csv": "openmic_train.csv_mp3.hdf", "split01_test.csv": "openmic_test.csv_mp3.hdf"}


def find_dataset(source: str | os.PathLike) -> Path:
    """The folder holding ``openmic-2018.npz``: ``source``, the folder the archive unpacks to, or below it."""
    source = Path(source)
    if source.name.endswith((".tgz", ".tar.gz")):
        source = extract(download(OPENMIC_URL, source, "OpenMIC-2018"), source.with_name(source.name.split(".t")[0]))
    for npz in [source / "openmic-2018.npz", *sorted(source.glob("*/openmic-2018.npz"))]:
        if npz.is_file():
            return npz.parent
    raise FileNotFoundError(f"{source} holds no openmic-2018.npz; give the archive openmic-2018-v1.0.0.tgz "
                            f"({OPENMIC_URL}) or the folder it unpacks to")


def split_targets(root: Path, split_csv: str) -> tuple[list[str], np.ndarray]:
    """Sample keys and ``[clips, 40]`` targets (``Y_true`` then ``Y_mask``) of one split, unannotated clips left out."""
    data = np.load(root / "openmic-2018.npz", allow_pickle=True)
    index = {str(key): i for i, key in enumerate(data["sample_key"])}
    path = root / "partitions" / split_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the archive's partitions/ folder is incomplete")
    keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    unknown = [k for k in keys if k not in index]
    if unknown:
        raise ValueError(f"{path}: sample keys {unknown[:5]} are not in openmic-2018.npz")
    rows = [index[k] for k in keys]
    targets = np.concatenate([data["Y_true"][rows], data["Y_mask"][rows].astype(int)], axis=1).astype(np.float32)
    annotated = targets.astype(int).sum(axis=1) > 0  # the original's filter: some label annotated
    return [k for k, keep in zip(keys, annotated, strict=True) if keep], targets[annotated]


def class_names(root: Path) -> list[str] | None:
    """Instrument names in index order, from the archive's ``class-map.json`` (None if absent)."""
    path = root / "class-map.json"
    if not path.is_file():
        return None
    mapping = json.loads(path.read_text())
    return sorted(mapping, key=mapping.get)


def prepare(source: str | os.PathLike, out_dir: str | os.PathLike, *, sample_rate: int = 32000,
            bit_rate: int | None = None, workers: int = 1, shard_size: int = 500, overwrite: bool = False,
            progress: bool = True) -> list[PrepareResult]:
    """Write both files into ``out_dir`` (an existing file is kept unless ``overwrite``)."""
    root, out_dir = find_dataset(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = {p.stem: p for p in sorted((root / "audio").glob("*/*")) if p.is_file()}
    names_of_classes = class_names(root)
    results = []
    for split_csv, file_name in SPLITS.items():
        out = out_dir / file_name
        if out.exists() and not overwrite:
            print(f"{out} already exists; skipped (--overwrite recreates it)")
            continue
        keys, targets = split_targets(root, split_csv)
        attrs = {"sample_rate": sample_rate, "n_classes": targets.shape[1] // 2, "split_csv": split_csv}
        if names_of_classes:
            attrs["class_names"] = names_of_classes
        manifest = {"split_sha1": hashlib.sha1((root / "partitions" / split_csv).read_bytes()).hexdigest(),
                    "sample_rate": sample_rate, "bit_rate": bit_rate}

        def make_tasks(rows: list[int], keys=keys) -> list[tuple]:
            return [(row, os.fspath(audio[keys[row]]) if keys[row] in audio else None, sample_rate, bit_rate)
                    for row in rows]

        results.append(write_hdf5(
            out, names=[f"{k}.mp3" for k in keys], targets=targets, attrs=attrs, manifest=manifest,
            make_tasks=make_tasks, ids=keys, what=f"clips of {split_csv}",
            empty_hint=f"check the audio/ folder of {root}", workers=workers, shard_size=shard_size,
            progress=progress))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m openmic.prepare_scripts.download_preprocess",
                                     description="Turn the OpenMIC-2018 archive into the two HDF5 files.")
    parser.add_argument("--source", default="openmic-2018-v1.0.0.tgz",
                        help=f"the archive (downloaded from {OPENMIC_URL} if missing) or its unpacked folder")
    parser.add_argument("--out-dir", default="audioset_hdf5s/mp3/", help="where the HDF5 files go")
    add_encoding_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="recreate existing files")
    args = parser.parse_args(argv)
    return run_prepare(lambda: prepare(args.source, args.out_dir, sample_rate=args.sample_rate, bit_rate=args.bitrate,
                                       workers=args.workers, shard_size=args.shard_size, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
