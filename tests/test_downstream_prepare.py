"""The prepare scripts of ESC-50, OpenMIC-2018 and FSD50K on mini releases in the official layouts.

The outputs must have the original's layouts (the dataset code reads files made by the original's
scripts unchanged), runs must resume, failures must be listed, and offline downloads must say
which URL to fetch and where to put the file.
"""

from __future__ import annotations

import csv
import shutil
import urllib.error
import zipfile

import numpy as np
import pytest
import torch.hub
from downstream_data import esc50_release, fsd50k_release, fsd50k_vocabulary

from esc50.prepare_scripts import download_preprocess as esc50_prepare
from fsd50k.prepare_scripts import create_h5pymp3_dataset as fsd50k_prepare
from helpers.data.audio_io import decode_audio, load_audio
from helpers.data.download import extract, extract_split_zip
from helpers.data.hdf5_dataset import open_read_only
from openmic.prepare_scripts import download_preprocess as openmic_prepare


def _offline(monkeypatch):
    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# ------------------------------------------------------------------------------------------ ESC-50
def test_esc50_layout_is_the_original_release(mini_esc50):
    base = mini_esc50["base_dir"]
    with open(f"{base}meta/esc50.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 4 * 2 and {"filename", "fold", "target", "category"} <= set(rows[0])
    wave = load_audio(f"{base}audio_32k/{rows[0]['filename']}", 32000)
    with open(f"{base}audio_32k/{rows[0]['filename']}", "rb") as fh:
        header = fh.read(44)
    assert header[:4] == b"RIFF" and int.from_bytes(header[24:28], "little") == 32000  # a 32 kHz wav
    assert abs(len(wave) - 32000) < 50  # 1 s clips


def test_esc50_rerun_converts_only_missing_clips_and_lists_failures(tmp_path):
    release = esc50_release(tmp_path, classes=2, per_class_and_fold=1)
    out = tmp_path / "esc50"
    written, failed = esc50_prepare.prepare(release, out, progress=False)
    assert written == 10 and failed == []
    (out / "audio_32k" / "3-1000-A-0.wav").unlink()
    (out / "audio_32k" / "4-1000-A-0.wav.partial").write_bytes(b"half")  # an interrupted conversion
    unpacked = tmp_path / "ESC-50-master" / "ESC-50-master" / "audio"
    (unpacked / "5-1010-A-1.wav").write_bytes(b"not audio")
    (out / "audio_32k" / "5-1010-A-1.wav").unlink()
    written, failed = esc50_prepare.prepare(release, out, progress=False)
    assert written == 1 and [name for name, _ in failed] == ["5-1010-A-1.wav"]
    assert (out / "failed.txt").read_text().startswith("5-1010-A-1.wav\t")
    assert not list((out / "audio_32k").glob("*.partial"))


def test_esc50_offline_download_names_url_and_path(tmp_path, monkeypatch):
    _offline(monkeypatch)
    status = esc50_prepare.main(["--source", str(tmp_path / "ESC-50-master.zip"), "--out-dir", str(tmp_path / "out")])
    assert status == 1
    with pytest.raises(RuntimeError) as err:
        esc50_prepare.prepare(tmp_path / "ESC-50-master.zip", tmp_path / "out")
    assert esc50_prepare.ESC50_URL in str(err.value) and str(tmp_path / "ESC-50-master.zip") in str(err.value)


# ----------------------------------------------------------------------------------------- OpenMIC
def test_openmic_files_have_the_original_layout(mini_openmic):
    keys, y_true, y_mask = mini_openmic["keys"], mini_openmic["Y_true"], mini_openmic["Y_mask"]
    for split, file_name in (("train", "openmic_train.csv_mp3.hdf"), ("test", "openmic_test.csv_mp3.hdf")):
        with open_read_only(f"{mini_openmic['base_dir']}mp3/{file_name}") as hf:
            assert hf["audio_name"].dtype == np.dtype("S20")
            assert hf["target"].dtype == np.float32 and hf["target"].shape[1] == 40
            names = [n.decode() for n in hf["audio_name"][()]]
            expected = [k for k in mini_openmic["partitions"][split] if y_mask[keys.index(k)].any()]
            assert names == [f"{k}.mp3" for k in expected]  # CSV order, unannotated clip left out
            rows = [keys.index(k) for k in expected]
            np.testing.assert_array_equal(hf["target"][:, :20], y_true[rows])
            np.testing.assert_array_equal(hf["target"][:, 20:], y_mask[rows].astype(np.float32))
            assert list(hf.attrs["class_names"]) == mini_openmic["class_names"]
            assert len(decode_audio(hf["mp3"][0])) > 30000  # 32 kHz mp3 of a 1 s clip
    assert len(mini_openmic["partitions"]["train"]) == 24 and len(names) == 8


def test_openmic_resumes_after_an_interruption(tmp_path, monkeypatch, mini_openmic):
    out_dir = tmp_path / "mp3"
    real = openmic_prepare.write_hdf5
    calls = []

    def interrupt_after_first_file(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(kwargs["out"] if "out" in kwargs else args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(openmic_prepare, "write_hdf5", interrupt_after_first_file)
    with pytest.raises(KeyboardInterrupt):
        openmic_prepare.prepare(mini_openmic["archive"], out_dir, progress=False, shard_size=4)
    monkeypatch.undo()
    assert (out_dir / "openmic_train.csv_mp3.hdf").is_file() and not (out_dir / "openmic_test.csv_mp3.hdf").exists()
    results = openmic_prepare.prepare(mini_openmic["archive"], out_dir, progress=False)
    assert [r.out.name for r in results] == ["openmic_test.csv_mp3.hdf"]  # the finished file is kept


def test_openmic_offline_download_names_url_and_path(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(RuntimeError) as err:
        openmic_prepare.prepare(tmp_path / "openmic-2018-v1.0.0.tgz", tmp_path / "mp3")
    assert openmic_prepare.OPENMIC_URL in str(err.value) and "openmic-2018-v1.0.0.tgz" in str(err.value)


# ------------------------------------------------------------------------------------------ FSD50K
def test_fsd50k_files_have_the_original_layout(mini_fsd50k):
    vocab = fsd50k_vocabulary()
    gt = mini_fsd50k["release"] / "FSD50K.ground_truth"
    for file_name, csv_name, split in (("FSD50K.train_mp3.hdf", "dev.csv", "train"),
                                       ("FSD50K.val_mp3.hdf", "dev.csv", "val"),
                                       ("FSD50K.eval_mp3.hdf", "eval.csv", None)):
        with open(gt / csv_name, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if split is None or r["split"] == split]
        with open_read_only(f"{mini_fsd50k['base_dir']}mp3/{file_name}") as hf:
            assert [n.decode() for n in hf["audio_name"][()]] == [f"{r['fname']}.mp3" for r in rows]
            assert hf["target"].dtype == np.uint8 and hf["target"].shape == (len(rows), 25)
            labels = np.unpackbits(hf["target"][()], axis=-1, count=200)
            for row, target in zip(rows, labels, strict=True):
                assert sorted(np.flatnonzero(target)) == sorted(vocab.index(x) for x in row["labels"].split(","))
            assert list(hf.attrs["class_names"]) == vocab
            lengths = {len(decode_audio(m)) for m in hf["mp3"][()]}
            assert max(lengths) > 2.5 * 32000 and min(lengths) < 0.7 * 32000  # whole clips, not cut


@pytest.mark.skipif(shutil.which("zip") is None, reason="making split zips for the test needs the zip tool")
def test_fsd50k_from_the_zenodo_split_zips(tmp_path):
    release = fsd50k_release(tmp_path / "FSD50K", counts={"train": 6, "val": 2, "eval": 2}, zipped=True)
    assert (release / "FSD50K.dev_audio.z01").is_file() and not (release / "FSD50K.dev_audio").exists()
    results = fsd50k_prepare.prepare(release, tmp_path / "mp3", progress=False)
    assert [r.n_written for r in results] == [6, 2, 2] and not any(r.failed for r in results)
    assert (release / "FSD50K.dev_audio" / "1000.wav").is_file()  # unpacked once, next to the zips


def test_fsd50k_missing_release_names_the_files_and_the_offline_error_the_url(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        fsd50k_prepare.prepare(tmp_path, tmp_path / "mp3")
    assert "FSD50K.ground_truth.zip" in str(err.value) and "--download" in str(err.value)
    _offline(monkeypatch)
    with pytest.raises(RuntimeError) as err:
        fsd50k_prepare.prepare(tmp_path, tmp_path / "mp3", fetch=True)
    assert f"{fsd50k_prepare.ZENODO}FSD50K.ground_truth.zip" in str(err.value)
    assert str(tmp_path / "FSD50K.ground_truth.zip") in str(err.value)


@pytest.mark.skipif(shutil.which("zip") is None, reason="making split zips for the test needs the zip tool")
@pytest.mark.parametrize("level", ["-0", "-6"])  # stored and deflated members
def test_split_zip_members_are_read_across_parts(tmp_path, level):
    import subprocess

    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    content = {f"f{i}.bin": rng.integers(0, 4, 150_000 + i, dtype=np.uint8).tobytes() for i in range(5)}
    for name, data in content.items():
        (folder / name).write_bytes(data)
    subprocess.run(["zip", "-q", "-r", level, "-s", "64k", "a.zip", "data"], cwd=tmp_path, check=True)
    assert len(list(tmp_path.glob("a.z0*"))) > 2
    extract(tmp_path / "a.zip", tmp_path / "out")
    for name, data in content.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == data
    part = tmp_path / "a.z02"
    damaged = bytearray(part.read_bytes())
    damaged[1000:1010] = bytes(10)
    part.write_bytes(bytes(damaged))
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        extract_split_zip(tmp_path / "a.zip", tmp_path / "again", progress=False)
