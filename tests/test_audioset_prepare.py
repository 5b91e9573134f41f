"""Tests of audioset/prepare_scripts: CSV parsing, HDF5 creation, failures, resume, atomic output, labels."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch.hub

from audioset.prepare_scripts import create_h5pymp3_dataset as prepare
from audioset.prepare_scripts.segments import read_segments
from audioset.synthetic import synthetic_clip, write_audio_file, write_labels_csv, write_segments_csv
from helpers.data import hdf5_writer as shards_mod
from helpers.data.audio_io import decode_audio
from helpers.data.hdf5_dataset import open_read_only
from models import labels as labels_mod

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 527


@pytest.fixture
def corpus(tmp_path):
    """8 segments with audio in several formats and namings; returns (csv, audio_dir, labels_csv, rows)."""
    rng = np.random.default_rng(0)
    audio_dir = tmp_path / "audio"
    (audio_dir / "nested").mkdir(parents=True)
    formats = [(".wav", 44100), (".mp3", 32000), (".flac", 22050), (".wav", 16000)]
    rows = []
    for i in range(8):
        ytid = f"vid{i:03d}-x_y8"  # 11 characters with YouTube's '-' and '_'
        labels = [i % 5, 100 + i] if i % 2 else [i % 5]
        ext, sr = formats[i % 4]
        folder = audio_dir / "nested" if i >= 6 else audio_dir
        name = f"Y{ytid}{ext}" if i % 3 == 0 else f"{ytid}{ext}"
        write_audio_file(folder / name, synthetic_clip([i % 5], 0.6, sr, rng), sr)
        rows.append((ytid, 10.0, 10.5, labels))
    csv_path = write_segments_csv(tmp_path / "segments.csv", rows)
    return csv_path, audio_dir, write_labels_csv(tmp_path / "labels.csv"), rows


def read_file(path):
    with open_read_only(path) as hf:
        names = [n.decode() for n in hf["audio_name"][()]]
        targets = np.unpackbits(hf["target"][()], axis=-1, count=N_CLASSES)
        mp3s = [bytes(a) for a in hf["mp3"][()]]
        attrs = dict(hf.attrs)
        dtypes = (hf["audio_name"].dtype, hf["mp3"].dtype, hf["target"].dtype, hf["target"].shape[1])
    return names, targets, mp3s, attrs, dtypes


def _interrupt_encoding_after(n: int, monkeypatch, check=lambda: True) -> list:
    """Make the prepare script's encoder raise KeyboardInterrupt (Ctrl-C) after ``n`` clips.

    ``check()`` must hold at every encoder call; returns the list that counts the encoded clips.
    """
    real_encode = prepare.encode_mp3
    calls = []

    def interrupting(*args, **kwargs):
        assert check()
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(1)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(prepare, "encode_mp3", interrupting)
    return calls


def test_read_segments_parses_the_official_format(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
        '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
        '--PJHxphWEs, 1.000, 2.000, "/m/012xff"\n'
    )
    with pytest.warns(UserWarning, match="duplicate"):
        segs = read_segments(path)
    assert [(s.ytid, s.start, s.end, s.labels) for s in segs] == [
        ("--PJHxphWEs", 30.0, 40.0, ("/m/09x0r", "/t/dd00088")),
        ("--ZhevVpy1s", 50.0, 60.0, ("/m/012xff",)),
    ]
    path.write_text('# a\nabc, 1.0, "/m/x"\n')
    with pytest.raises(ValueError, match=r"s.csv:2"):
        read_segments(path)


def test_creates_the_original_layout_in_csv_order(corpus, tmp_path):
    csv_path, audio_dir, labels_csv, rows = corpus
    out = tmp_path / "out" / "train_mp3.hdf"
    result = prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)
    assert result.n_written == 8 and result.failed == [] and result.failed_path is None
    names, targets, mp3s, attrs, dtypes = read_file(out)
    assert names == [f"Y{ytid}.mp3" for ytid, *_ in rows]
    for row, (_, _, _, labels) in enumerate(rows):
        assert np.flatnonzero(targets[row]).tolist() == sorted(labels)
    name_dtype, mp3_dtype, target_dtype, width = dtypes
    assert name_dtype.kind == "S" and name_dtype.itemsize >= 20
    assert h5py.check_vlen_dtype(mp3_dtype) == np.dtype("uint8")
    assert target_dtype == np.uint8 and width == 66
    assert attrs["sample_rate"] == 32000 and attrs["n_classes"] == 527
    for data in mp3s:
        wave = decode_audio(data, 32000)
        assert abs(wave.size - 16000) <= 1152  # cut to the 0.5 s segment, 32 kHz
        assert np.abs(wave).max() > 0.05
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.tmp").exists()


def test_cut_segments_takes_start_to_end(tmp_path):
    sr = 32000
    wave = np.zeros(3 * sr, dtype=np.float32)
    wave[sr : 2 * sr] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)  # sound only in [1, 2] s
    (tmp_path / "a").mkdir()
    write_audio_file(tmp_path / "a" / "abcdefghijk.wav", wave, sr)
    csv_path = write_segments_csv(tmp_path / "s.csv", [("abcdefghijk", 1.0, 2.0, [0])])
    labels = write_labels_csv(tmp_path / "l.csv")
    cut = prepare.create_hdf5(csv_path, tmp_path / "a", tmp_path / "cut.hdf", labels, cut_segments=True, progress=False)
    head = prepare.create_hdf5(csv_path, tmp_path / "a", tmp_path / "head.hdf", labels, progress=False)
    assert cut.n_written == head.n_written == 1
    cut_wave = decode_audio(read_file(tmp_path / "cut.hdf")[2][0])
    head_wave = decode_audio(read_file(tmp_path / "head.hdf")[2][0])
    assert abs(cut_wave.size - sr) <= 1152 and abs(head_wave.size - sr) <= 1152  # one second each
    window_rms = np.sqrt((cut_wave[: 30 * 1000].reshape(30, 1000) ** 2).mean(axis=1))
    assert window_rms.min() > 0.3  # the tone all the way through: [1, 2] s was cut
    assert np.abs(head_wave).max() < 0.01  # the silent first second


def test_missing_and_unreadable_inputs_are_listed_not_fatal(corpus, tmp_path, capsys):
    csv_path, audio_dir, labels_csv, rows = corpus
    broken = rows[2][0]
    for f in audio_dir.rglob(f"*{broken}*"):
        f.write_bytes(b"definitely not audio" * 20)
    missing = rows[5][0]
    for f in audio_dir.rglob(f"*{missing}*"):
        f.unlink()
    out = tmp_path / "x.hdf"
    args = ["--segments", str(csv_path), "--audio-dir", str(audio_dir), "--out", str(out), "--labels", str(labels_csv)]
    status = prepare.main(args)
    assert status == 0
    printed = capsys.readouterr().out
    assert "wrote 6 clips" in printed and "2 segment(s) failed" in printed
    failed_lines = Path(f"{out}.failed.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failed_lines] == [broken, missing]
    assert "not found" in failed_lines[1]
    names = read_file(out)[0]
    assert f"Y{broken}.mp3" not in names and f"Y{missing}.mp3" not in names and len(names) == 6


def test_interrupted_run_resumes_and_gives_the_same_file(corpus, tmp_path, monkeypatch):
    csv_path, audio_dir, labels_csv, rows = corpus
    reference = tmp_path / "ref.hdf"
    prepare.create_hdf5(csv_path, audio_dir, reference, labels_csv, progress=False)

    out = tmp_path / "resumed.hdf"
    real_encode = prepare.encode_mp3
    calls = _interrupt_encoding_after(5, monkeypatch, check=lambda: not out.exists())  # never half-done
    with pytest.raises(KeyboardInterrupt):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, shard_size=2, progress=False)
    assert not out.exists()
    partial = Path(f"{out}.partial")
    done, failed = shards_mod.PartialRun(partial, manifest=_manifest_of(partial)).processed_rows()
    assert done == {0, 1, 2, 3, 4} and failed == set()  # the 5 finished clips were kept
    (partial / "shard_00042.h5.tmp").write_bytes(b"half-written shard of a killed run")

    calls.clear()
    monkeypatch.setattr(prepare, "encode_mp3", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    result = prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, shard_size=2, progress=False)
    assert len(calls) == 3  # only the remaining segments were encoded
    assert result.n_written == 8 and not partial.exists()
    got, want = read_file(out), read_file(reference)
    assert got[0] == want[0] and np.array_equal(got[1], want[1]) and got[2] == want[2]


def test_resume_retries_segments_whose_audio_was_missing(corpus, tmp_path, monkeypatch):
    csv_path, audio_dir, labels_csv, rows = corpus
    (late,) = list(audio_dir.glob(f"*{rows[1][0]}*"))
    parked = late.rename(tmp_path / late.name)  # not downloaded yet
    out = tmp_path / "late.hdf"
    _interrupt_encoding_after(3, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, shard_size=2, progress=False)
    monkeypatch.undo()
    parked.rename(late)  # the download finished meanwhile
    result = prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, shard_size=2, progress=False)
    assert result.n_written == 8 and result.failed == []
    assert not Path(f"{out}.failed.txt").exists()
    assert f"Y{rows[1][0]}.mp3" in read_file(out)[0]


def test_no_readable_audio_at_all_is_an_error_not_an_empty_file(corpus, tmp_path):
    csv_path, _, labels_csv, _ = corpus
    (tmp_path / "empty").mkdir()
    out = tmp_path / "none.hdf"
    with pytest.raises(RuntimeError, match="none of the 8 segments.*--audio-dir"):
        prepare.create_hdf5(csv_path, tmp_path / "empty", out, labels_csv, progress=False)
    assert not out.exists()
    assert len(Path(f"{out}.failed.txt").read_text().splitlines()) == 8


def _manifest_of(partial: Path) -> dict:
    import json

    return json.loads((partial / "manifest.json").read_text())


def test_resume_with_different_settings_is_refused(corpus, tmp_path, monkeypatch):
    csv_path, audio_dir, labels_csv, _ = corpus
    out = tmp_path / "o.hdf"
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "encode_mp3", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="different settings.*sample_rate"):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, sample_rate=16000, progress=False)


def test_output_is_renamed_only_when_complete(corpus, tmp_path, monkeypatch):
    csv_path, audio_dir, labels_csv, _ = corpus
    out = tmp_path / "atomic.hdf"
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == out:
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(shards_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)
    assert not out.exists() and Path(f"{out}.partial").is_dir()
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(prepare, "encode_mp3", lambda *a, **k: calls.append(1))
    result = prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)
    assert calls == [] and result.n_written == 8  # assembled from the kept work, nothing re-encoded
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare.create_hdf5(csv_path, audio_dir, out, labels_csv, progress=False)


def test_unknown_label_names_both_files(tmp_path):
    (tmp_path / "a").mkdir()
    csv_path = write_segments_csv(tmp_path / "s.csv", [("abcdefghijk", 0.0, 1.0, [0])])
    labels = tmp_path / "l.csv"
    labels.write_text('index,mid,display_name\n0,/m/other,"Other"\n')
    with pytest.raises(ValueError, match=r"/m/fake000.*l\.csv"):
        prepare.create_hdf5(csv_path, tmp_path / "a", tmp_path / "o.hdf", labels, progress=False)


def test_labels_come_from_the_torch_hub_cache(corpus, tmp_path, monkeypatch):
    csv_path, audio_dir, _, _ = corpus
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # honour TORCH_HOME even if set_dir was used
    cached = torch_home / "hub" / "audioset" / "class_labels_indices.csv"
    assert labels_mod.labels_cache_path() == cached
    cached.parent.mkdir(parents=True)
    write_labels_csv(cached)

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    result = prepare.create_hdf5(csv_path, audio_dir, tmp_path / "o.hdf", labels_csv=None, progress=False)
    assert result.n_written == 8


def test_labels_download_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    target = tmp_path / "th" / "hub" / "audioset" / "class_labels_indices.csv"

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as err:
        labels_mod.ensure_labels_csv(None)
    assert labels_mod.AUDIOSET_LABELS_URL in str(err.value) and str(target) in str(err.value)
    assert not target.exists()

    seen = []

    def fake_download(url, dst, *args, **kwargs):
        seen.append(url)
        write_labels_csv(Path(dst), n_classes=3)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert labels_mod.ensure_labels_csv(None) == target
    assert seen == [labels_mod.AUDIOSET_LABELS_URL]
    assert labels_mod.read_labels(target) == ["/m/fake000", "/m/fake001", "/m/fake002"]
    with pytest.raises(FileNotFoundError, match="label list not found"):
        labels_mod.ensure_labels_csv(tmp_path / "nope.csv")


@pytest.mark.slow
def test_cli_runs_as_a_script_path(corpus, tmp_path):
    csv_path, audio_dir, labels_csv, _ = corpus
    out = tmp_path / "cli.hdf"
    script = REPO / "audioset" / "prepare_scripts" / "create_h5pymp3_dataset.py"
    args = ["--segments", str(csv_path), "--audio-dir", str(audio_dir), "--out", str(out), "--labels", str(labels_csv)]
    args += ["--workers", "2"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 8 clips" in done.stdout
    assert len(read_file(out)[0]) == 8
    again = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr
