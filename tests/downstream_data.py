"""Mini releases of ESC-50, OpenMIC-2018 and FSD50K, and a folder of own clips, for the tests.

Each is made in the official release's layout (archive or folder, CSVs, audio in the release's
format), so the tests run the real prepare scripts on them. Class ``k`` is a tone at
``TONE_HZ[2k]`` (:mod:`audioset.synthetic`), so a tiny model learns the classes in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from audioset.synthetic import synthetic_clip, write_audio_file
from helpers.data.audio_io import encode_audio

RNG_SEED = 7


def tones(classes: list[int], seconds: float, sample_rate: int, rng) -> np.ndarray:
    """A clip of the tones of ``classes``: class ``c`` is the tone ``2c`` of :mod:`audioset.synthetic` (every
    other one, so a tiny model separates them quickly; classes above 3 share the highest tone)."""
    return synthetic_clip([min(2 * c, 7) for c in classes], seconds, sample_rate, rng)


def _wav_bytes(labels: list[int], seconds: float, sample_rate: int, rng) -> bytes:
    """A 16-bit mono wav of the class tones of ``labels``."""
    return encode_audio(tones(labels, seconds, sample_rate, rng), sample_rate, format="wav")


# ------------------------------------------------------------------------------------------ ESC-50
def esc50_release(root: Path, classes: int = 4, per_class_and_fold: int = 2, seconds: float = 1.0) -> Path:
    """``ESC-50-master.zip`` as GitHub serves it: ``meta/esc50.csv`` + ``audio/*.wav`` at 44.1 kHz."""
    rng = np.random.default_rng(RNG_SEED)
    rows, files = [], {}
    for fold in range(1, 6):
        for target in range(classes):
            for take in range(per_class_and_fold):
                name = f"{fold}-{1000 + 10 * target + take}-A-{target}.wav"
                rows.append([name, fold, target, f"tone_{target}", "False", str(1000 + target), "A"])
                files[name] = _wav_bytes([target], seconds, 44100, rng)
    meta = io.StringIO()
    writer = csv.writer(meta, lineterminator="\n")
    writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
    writer.writerows(rows)
    path = root / "ESC-50-master.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", meta.getvalue())
        for name, data in files.items():
            zf.writestr(f"ESC-50-master/audio/{name}", data)
    return path


# ---------------------------------------------------------------------------------------- OpenMIC
OPENMIC_CLASSES = 20


def openmic_release(root: Path, per_split: dict[str, int] | None = None, seconds: float = 1.0) -> tuple[Path, dict]:
    """``openmic-2018-v1.0.0.tgz``: ``openmic-2018/`` with the npz, the split CSVs, class-map.json and .ogg audio.

    Clip ``i`` carries instrument ``i % 4`` (a tone, relevance 0.9); instruments 0-7 are annotated
    (the others 0.1: absent), 8-19 are not (mask 0, relevance 0.5). One training clip has no
    annotation at all (the original's prepare script leaves such clips out). Returns the archive
    and facts for the tests.
    """
    per_split = per_split or {"train": 24, "test": 8}
    rng = np.random.default_rng(RNG_SEED)
    keys, y_true, y_mask, members = [], [], [], {}
    partitions = {}
    for split, count in per_split.items():
        partitions[split] = []
        for i in range(count):
            key = f"{len(keys):06d}_{3840 * (i + 1)}"
            k = i % 4
            true = np.full(OPENMIC_CLASSES, 0.5, dtype=np.float32)
            mask = np.zeros(OPENMIC_CLASSES, dtype=bool)
            true[:8], mask[:8] = 0.1, True
            true[k] = 0.9
            if split == "train" and i == count - 1:  # no annotation at all
                true[:], mask[:] = 0.4, False
            keys.append(key)
            y_true.append(true)
            y_mask.append(mask)
            partitions[split].append(key)
            wave = tones([k], seconds, 48000, rng)
            members[f"openmic-2018/audio/{key[:3]}/{key}.ogg"] = encode_audio(wave, 48000, format="ogg")  # OpenMIC distributes Ogg/Opus
    npz = io.BytesIO()
    np.savez(npz, X=np.zeros((len(keys), 10, 128), dtype=np.uint8), Y_true=np.stack(y_true), Y_mask=np.stack(y_mask),
             sample_key=np.array(keys))
    members["openmic-2018/openmic-2018.npz"] = npz.getvalue()
    for split, split_keys in partitions.items():
        members[f"openmic-2018/partitions/split01_{split}.csv"] = ("\n".join(split_keys) + "\n").encode()
    class_map = {f"instrument_{i:02d}": i for i in range(OPENMIC_CLASSES)}
    members["openmic-2018/class-map.json"] = json.dumps(class_map).encode()
    path = root / "openmic-2018-v1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path, {"partitions": partitions, "Y_true": np.stack(y_true), "Y_mask": np.stack(y_mask), "keys": keys,
                  "class_names": sorted(class_map, key=class_map.get)}


# ----------------------------------------------------------------------------------------- FSD50K
FSD50K_CLASSES = 200


def fsd50k_vocabulary() -> list[str]:
    """200 made-up class names, sorted (the official vocabulary is sorted too)."""
    return [f"Sound_{i:03d}" for i in range(FSD50K_CLASSES)]


def fsd50k_release(root: Path, counts: dict[str, int] | None = None, zipped: bool = False) -> Path:
    """The FSD50K folder as the Zenodo zips unpack: ground truth CSVs and wav folders (or the zips themselves).

    Clip ``i`` carries class ``i % 4`` (and, for odd ``i``, class 4 too); its length varies between
    0.6 s and 2.6 s, so 2 s crops and whole-clip evaluation both matter.
    """
    counts = counts or {"train": 64, "val": 8, "eval": 8}
    rng = np.random.default_rng(RNG_SEED)
    vocab = fsd50k_vocabulary()
    gt = {"dev": [["fname", "labels", "mids", "split"]], "eval": [["fname", "labels", "mids"]]}
    audio: dict[str, dict[str, bytes]] = {"FSD50K.dev_audio": {}, "FSD50K.eval_audio": {}}
    fname = 1000
    for split, count in counts.items():
        for i in range(count):
            classes = [(i + (2 if split == "eval" else 0)) % 4] + ([4] if i % 2 else [])
            labels = ",".join(vocab[c] for c in classes)
            mids = ",".join(f"/m/{c:04d}" for c in classes)
            seconds = 0.6 + (i % 5) * 0.5
            data = _wav_bytes(classes, seconds, 44100, rng)
            if split == "eval":
                gt["eval"].append([str(fname), labels, mids])
                audio["FSD50K.eval_audio"][f"{fname}.wav"] = data
            else:
                gt["dev"].append([str(fname), labels, mids, split])
                audio["FSD50K.dev_audio"][f"{fname}.wav"] = data
            fname += 1
    texts = {}
    for name, rows in gt.items():
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        texts[f"FSD50K.ground_truth/{name}.csv"] = text.getvalue()
    vocab_text = io.StringIO()
    csv.writer(vocab_text, lineterminator="\n").writerows([[i, v, f"/m/{i:04d}"] for i, v in enumerate(vocab)])
    texts["FSD50K.ground_truth/vocabulary.csv"] = vocab_text.getvalue()
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for folder, files in audio.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / folder / name).write_bytes(data)
    if zipped:  # as Zenodo serves it: the audio as split zips (parts of 64 kB here), made with the zip tool
        for folder in ("FSD50K.ground_truth", *audio):
            split = [] if folder == "FSD50K.ground_truth" else ["-s", "64k"]
            subprocess.run(["zip", "-q", "-r", *split, f"{folder}.zip", folder], cwd=root, check=True)
            shutil.rmtree(root / folder)
    return root


# ---------------------------------------------------------------------------------- own clip folder
def own_folder(root: Path, classes: int = 4, per_class: int = 8, multi_label: bool = False,
               split_column: str | None = None) -> tuple[Path, Path]:
    """A folder of clips in mixed formats and rates (stereo too) and a CSV naming them.

    Classes are ``dog``, ``cat``, ... (tones). Multi-label: odd clips also carry the next class.
    ``split_column="split"`` marks every fourth clip ``test``.
    """
    rng = np.random.default_rng(RNG_SEED)
    names = ["dog", "cat", "bird", "rain", "car", "bell"][:classes]
    audio = root / "clips"
    audio.mkdir(parents=True)
    formats = [(".wav", 44100, True), (".mp3", 32000, False), (".flac", 16000, False), (".wav", 22050, False)]
    header = ["filename", "label"] + ([split_column] if split_column else [])
    rows = [header]
    for i in range(classes * per_class):
        k = i % classes
        labels = [k, (k + 1) % classes] if multi_label and i % 2 else [k]
        ext, rate, stereo = formats[i % len(formats)]
        wave = tones(labels, 1.0, rate, rng)
        if stereo:
            wave = np.stack([wave, wave], axis=1)
        write_audio_file(audio / f"clip{i:03d}{ext}", wave, rate)
        row = [f"clip{i:03d}{ext}", ",".join(names[j] for j in labels)]
        if split_column:
            row.append("test" if (i // classes) % 4 == 3 else "train")
        rows.append(row)
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return audio, csv_path



#: GTZAN's ten genres (its folder names)
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def genre_tree(root: Path, per_genre: int = 3, seconds: float = 1.0, genres: list[str] = GENRES) -> Path:
    """A GTZAN-like tree, ``root/<genre>/<genre>.0000N.wav`` (22.05 kHz mono, as GTZAN); genre ``g``
    is a tone of its own (220 Hz * 1.25^g) with a little noise."""
    rng = np.random.default_rng(RNG_SEED)
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    for g, genre in enumerate(genres):
        (root / genre).mkdir(parents=True, exist_ok=True)
        for i in range(per_genre):
            wave = 0.3 * np.sin(2 * np.pi * 220.0 * 1.25**g * t + rng.uniform(0, 2 * np.pi))
            wave += 0.01 * rng.standard_normal(t.size)
            write_audio_file(root / genre / f"{genre}.{i:05d}.wav", wave.astype(np.float32), rate)
    return root


def audiofolder(root: Path, per_split: dict[str, int] | None = None, per_split_metadata: bool = False,
                classes: list[str] = ("dog", "cat", "bird")) -> Path:
    """Hugging Face's ``audiofolder`` layout: ``root/train/*.wav``, ``root/test/*.wav`` and their labels in
    ``root/metadata.csv`` (``file_name`` relative to ``root``), or in one ``metadata.csv`` per split folder."""
    rng = np.random.default_rng(RNG_SEED)
    per_split = per_split or {"train": 6, "test": 3}
    rows: dict[str, list[list[str]]] = {}
    for split, n in per_split.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k = i % len(classes)
            name = f"{classes[k]}_{i:02d}.wav"
            write_audio_file(root / split / name, tones([k], 1.0, 16000, rng), 16000)
            rows.setdefault(split, []).append([name if per_split_metadata else f"{split}/{name}", classes[k]])
    tables = ({root / split / "metadata.csv": r for split, r in rows.items()} if per_split_metadata
              else {root / "metadata.csv": [r for split_rows in rows.values() for r in split_rows]})
    for path, table in tables.items():
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows([["file_name", "label"], *table])
    return root


# ------------------------------------------------------------------- prepared layouts (fixtures)
def prepared_esc50(root: Path) -> dict:
    """The mini ESC-50 release, resampled by the real prepare script; ``base_dir`` for the config."""
    from esc50.prepare_scripts.download_preprocess import prepare

    release = esc50_release(root)
    prepare(release, root / "esc50", progress=False)
    return {"release": release, "base_dir": f"{root / 'esc50'}/", "classes": 4}


def prepared_openmic(root: Path) -> dict:
    """The mini OpenMIC archive made into the two HDF5 files by the real prepare script."""
    from openmic.prepare_scripts.download_preprocess import prepare

    archive, facts = openmic_release(root)
    prepare(archive, root / "hdf5s" / "mp3", progress=False)
    return {"archive": archive, "base_dir": f"{root / 'hdf5s'}/", **facts}


def prepared_fsd50k(root: Path) -> dict:
    """The mini FSD50K folder made into the three HDF5 files by the real prepare script."""
    from fsd50k.prepare_scripts.create_h5pymp3_dataset import prepare

    release = fsd50k_release(root / "FSD50K")
    prepare(release, root / "hdf5s" / "mp3", progress=False)
    return {"release": release, "base_dir": f"{root / 'hdf5s'}/"}
