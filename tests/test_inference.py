"""Inference: windows, real decoding, bad files, checkpoints, the HEAR API, precision, the CLI.

Tiny networks (1 block, width 32) registered as a "released" architecture with a fake release
file in a temporary torch hub cache, or written into a checkpoint by the test; audio generated here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.data.audio_io import load_audio
from helpers.inference import cli, hear
from helpers.inference.model import InferenceModel, load_checkpoint, load_ensemble, load_model, load_released
from helpers.inference.tagging import tag_files, tag_waveform, window_starts
from models.build import get_model
from models.checkpoints import CheckpointError
from models.hub_cache import cache_path
from models.preprocess import AugmentMelSTFT
from models.registry import ARCHS, ArchConfig

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
TINY_NET = dict(depth=1, embed_dim=32, num_heads=2, input_tdim=200)  # time encodings for 2 s


@pytest.fixture
def tiny_release(offline_home, monkeypatch):
    """A tiny architecture registered as released, with its release file in the cache."""
    cfg = ArchConfig("tiny_release", "https://example.invalid/tiny-release.pt", "test only",
                     embed_dim=32, depth=1, num_heads=2, input_tdim=200)
    monkeypatch.setitem(ARCHS, cfg.name, cfg)
    path = cache_path(cfg.url)
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(get_model(pretrained=False, **TINY_NET).state_dict(), path)
    return cfg


@pytest.fixture
def tiny_model(tiny_release) -> InferenceModel:
    return load_released("tiny_release").place("cpu", "fp32")


def tone(seconds: float, sr: int = SR, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * hz * t) * np.linspace(0.2, 1, t.size) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


def write_float_wav(path: Path, wave: np.ndarray, sr: int = SR) -> Path:
    """32-bit float wav (it can hold NaN)."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


# ------------------------------------------------------------------------------------ geometry
def test_window_starts_cover_the_audio_with_full_windows():
    assert window_starts(50, 100, 25) == [0]
    assert window_starts(100, 100, 25) == [0]
    assert window_starts(250, 100, 50) == [0, 50, 100, 150]
    assert window_starts(270, 100, 50) == [0, 50, 100, 150, 170]  # the last ends with the audio
    with pytest.raises(ValueError):
        window_starts(100, 10, 20)


def test_released_model_geometry(tiny_model):
    # 20 time encodings at stride 10: up to 215 frames = 68800 samples; window: whole seconds
    assert tiny_model.max_samples == 215 * 320 and tiny_model.window == 2 * SR
    assert tiny_model.min_samples == 15 * 320 + 1
    assert tiny_model.name == "tiny_release" and tiny_model.n_classes == 527


# ------------------------------------------------------------------------------------- tagging
def test_long_file_windows_equal_separate_short_calls(tiny_model, tmp_path, write_audio):
    path = write_audio(tmp_path / "long.wav", tone(5.3), SR)
    result = next(tag_files(tiny_model, [path], hop=SR // 2, batch_size=3))
    wave = load_audio(path)
    assert result.ok and result.duration == pytest.approx(5.3, abs=1e-3)
    np.testing.assert_allclose(result.starts, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.3], atol=1e-6)
    np.testing.assert_allclose(result.ends - result.starts, 2.0, atol=1e-6)
    for start, scores in zip(result.starts, result.scores, strict=True):
        piece = wave[round(start * SR):round(start * SR) + 2 * SR]  # the window as a file of its own
        alone = tag_waveform(tiny_model, piece)
        assert len(alone.starts) == 1
        np.testing.assert_allclose(scores, alone.scores[0], atol=1e-5)
    np.testing.assert_allclose(result.mean, result.scores.mean(0))
    np.testing.assert_allclose(result.max, result.scores.max(0))


def test_formats_and_rates_are_decoded_resampled_and_mixed(tiny_model, tmp_path, write_audio):
    stereo = np.stack([tone(3, 44100), tone(3, 44100, hz=880)], axis=1)
    files = [write_audio(tmp_path / "stereo44k.wav", stereo, 44100),
             write_audio(tmp_path / "a22k.mp3", tone(3, 22050), 22050),
             write_audio(tmp_path / "a16k.flac", tone(3, 16000), 16000),
             write_audio(tmp_path / "a48k.mp3", tone(3, 48000), 48000)]
    results = list(tag_files(tiny_model, files))
    assert [Path(r.path).name for r in results] == [f.name for f in files]
    for r in results:
        assert r.ok, r.error
        assert r.duration == pytest.approx(3.0, abs=0.06)  # mp3 padding is a few ms at most
        assert r.scores.shape == (2, 527) and np.isfinite(r.scores).all()
    # the same tone at 16 kHz flac and 44.1 kHz wav gives nearly the same tags once resampled
    same = list(tag_files(tiny_model, [write_audio(tmp_path / "t16.flac", tone(3, 16000), 16000),
                                       write_audio(tmp_path / "t44.wav", tone(3, 44100), 44100)]))
    assert np.abs(same[0].mean - same[1].mean).max() < 0.02


def test_bad_files_are_reported_and_the_others_processed(tiny_model, tmp_path, write_audio):
    good = write_audio(tmp_path / "good.wav", tone(1), SR)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n" * 50)
    truncated = tmp_path / "cut.flac"
    truncated.write_bytes(write_audio(tmp_path / "whole.flac", tone(1), SR).read_bytes()[:40])
    nan_wave = tone(1)
    nan_wave[1000:1100] = np.nan
    nan_file = write_float_wav(tmp_path / "nan.wav", nan_wave)
    silent = write_audio(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    tiny = write_audio(tmp_path / "tiny.wav", tone(0.05), SR)  # shorter than one patch
    files = [empty, good, text, tmp_path / "missing.wav", truncated, nan_file, silent, tiny]
    results = list(tag_files(tiny_model, files, workers=2))
    assert [r.path for r in results] == [str(f) for f in files]
    status = {Path(r.path).name: r.ok for r in results}
    assert status == {"empty.wav": False, "good.wav": True, "notes.mp3": False, "missing.wav": False,
                      "cut.flac": False, "nan.wav": True, "silent.wav": True, "tiny.wav": True}
    for r in results:
        if r.ok:
            assert np.isfinite(r.scores).all()
        else:
            assert r.error
    nan_result = results[5]
    assert nan_result.notes and "100 non-finite" in nan_result.notes[0]
    assert results[0].error == "AudioDecodeError: empty file (0 bytes)"
    assert results[7].notes == ("0.05 s of audio is shorter than one patch (0.15 s): zero-padded to it",)


# ------------------------------------------------------------------------------------- loading
def tiny_models_config(**net) -> dict:
    """A ``models`` config as training stores it (it asks for released weights and a start file)."""
    return {"net": {**{"arch": "passt_s_swa_p16_128_ap476", "pretrained": True, "n_classes": 3, "fstride": 10,
                       "tstride": 10, "input_fdim": 128, "s_patchout_t": 2, "s_patchout_f": 1}, **TINY_NET, **net},
            "mel": {"n_mels": 128, "hopsize": 320, "freqm": 8, "timem": 20},
            "ensemble": [], "checkpoint": "/nowhere/start.ckpt", "checkpoint_swa": False}


def test_checkpoint_rebuilds_and_names_its_network(offline_home, tmp_path):
    torch.manual_seed(1)
    live = get_model(pretrained=False, n_classes=3, **TINY_NET)
    swa = get_model(pretrained=False, n_classes=3, **TINY_NET)
    state = {**{f"net.{k}": v for k, v in live.state_dict().items()},
             **{f"net_swa.{k}": v for k, v in swa.state_dict().items()}}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "passt": {"experiment": "mine", "models": tiny_models_config(),
                                              "class_names": ["dog", "cat", "bird"]}}, path)
    wave = torch.from_numpy(tone(2))[None]
    spectrograms = AugmentMelSTFT().eval()(wave).unsqueeze(1)
    for use_swa, net in ((False, live), (True, swa)):
        model = load_checkpoint(path, swa=use_swa).place("cpu", "fp32")
        assert model.class_names == ["dog", "cat", "bird"]
        with torch.no_grad():
            torch.testing.assert_close(model(wave)[0], net.eval()(spectrograms)[0], atol=1e-5, rtol=0)


def test_ensemble_checkpoint(offline_home, tmp_path):
    torch.manual_seed(2)
    members = [get_model(pretrained=False, n_classes=3, **TINY_NET, fstride=f, tstride=f) for f in (10, 16)]
    state = {f"net.models.{i}.{k}": v for i, m in enumerate(members) for k, v in m.state_dict().items()}
    cfg = tiny_models_config()
    cfg["ensemble"] = [[cfg["net"]["arch"], 10, 10], {"arch": cfg["net"]["arch"], "fstride": 16, "tstride": 16,
                                                     "pretrained": True}]
    torch.save({"state_dict": state, "passt": {"models": cfg, "class_names": None}}, tmp_path / "ens.ckpt")
    model = load_checkpoint(tmp_path / "ens.ckpt").place("cpu", "fp32")
    wave = torch.from_numpy(tone(1))[None]
    spectrograms = AugmentMelSTFT().eval()(wave).unsqueeze(1)
    with torch.no_grad():
        expected = torch.stack([m.eval()(spectrograms)[0] for m in members]).mean(0)
        torch.testing.assert_close(model(wave)[0], expected, atol=1e-5, rtol=0)
    assert model.class_names is None and model.embedding_size == 64


def test_checkpoint_without_record_needs_an_arch(tiny_release, tmp_path):
    net = get_model(pretrained=False, n_classes=5, **TINY_NET)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="--arch"):
        load_checkpoint(tmp_path / "old.ckpt")
    model = load_checkpoint(tmp_path / "old.ckpt", arch="tiny_release")
    assert model.n_classes == 5


# ------------------------------------------------------------------------------------ HEAR API
def test_hear_shapes_timestamps_and_sizes(tiny_release):
    model = hear.load_model(arch="tiny_release", device="cpu")
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (SR, 559, 559)
    assert (model.timestamp_window, model.timestamp_hop, model.max_model_window, model.scene_hop) == (
        5120, 1600, 2 * SR, SR // 2)
    audio = torch.from_numpy(np.stack([tone(1.5), tone(1.5, hz=300)]))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    n = 1 + audio.shape[1] // 1600  # one window centred every 50 ms, the first at 0
    assert emb.shape == (2, n, 559) and ts.shape == (2, n)
    torch.testing.assert_close(ts[0], torch.arange(n) * 50.0)
    assert hear.get_scene_embeddings(audio, model).shape == (2, 559)
    model = hear.load_model(arch="tiny_release", device="cpu", mode="embed_only")
    assert model.scene_embedding_size == 32 and hear.get_scene_embeddings(audio, model).shape == (2, 32)


def test_hear_windows_equal_separate_calls(tiny_release):
    """Independent expectation: pad by half a window (reflection), embed each window on its own."""
    model = hear.load_model(arch="tiny_release", device="cpu", batch_size=7)
    audio = torch.from_numpy(np.stack([tone(0.4), tone(0.4, hz=200)]))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    padded = np.pad(audio.numpy(), ((0, 0), (2560, 2560)), mode="reflect")
    for i in (0, 3, emb.shape[1] - 1):
        piece = torch.from_numpy(padded[:, i * 1600:i * 1600 + 5120].copy())
        with torch.no_grad():
            logits, embedding = model(piece)
        torch.testing.assert_close(emb[:, i], torch.cat([logits, embedding], 1), atol=1e-5, rtol=0)


def test_hear_scene_embedding_of_long_audio_is_the_mean_over_windows(tiny_release):
    model = hear.load_model(arch="tiny_release", device="cpu")
    short = torch.from_numpy(tone(1.9))[None]
    with torch.no_grad():
        whole = torch.cat(model(short), 1)
    torch.testing.assert_close(hear.get_scene_embeddings(short, model), whole, atol=1e-5, rtol=0)
    long = torch.from_numpy(tone(4.5))[None]  # > 2 s window: 2 s windows every 0.5 s, padded by 1 s
    padded = F.pad(long[:, None], (SR, SR), mode="reflect")[:, 0]
    starts = range(0, padded.shape[1] - 2 * SR + 1, SR // 2)
    with torch.no_grad():
        expected = torch.stack([torch.cat(model(padded[:, s:s + 2 * SR]), 1) for s in starts]).mean(0)
    torch.testing.assert_close(hear.get_scene_embeddings(long, model), expected, atol=1e-5, rtol=0)


def test_hear_handles_audio_shorter_than_half_a_window(tiny_release):
    model = hear.load_model(arch="tiny_release", device="cpu")
    emb, ts = hear.get_timestamp_embeddings(torch.zeros(1, 1000), model)
    assert emb.shape == (1, 1, 559) and torch.isfinite(emb).all()


# ---------------------------------------------------------------------------------- the labels
def test_class_names_come_from_labels_file_checkpoint_or_audioset(tiny_model, tmp_path, offline_home):
    from audioset.synthetic import write_labels_csv

    with pytest.raises(RuntimeError) as err:  # offline, nothing cached: says where the file goes
        cli.class_names_for(tiny_model, None)
    assert str(offline_home / "hub" / "audioset" / "class_labels_indices.csv") in str(err.value)
    write_labels_csv(offline_home / "hub" / "audioset" / "class_labels_indices.csv")
    assert cli.class_names_for(tiny_model, None)[3] == "Synthetic label 3, made up"
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(527)))
    assert cli.class_names_for(tiny_model, str(names))[526] == "thing 526"
    names.write_text("just\ntwo\n")
    with pytest.raises(ValueError, match="2 classes but the model has 527"):
        cli.class_names_for(tiny_model, str(names))
    tiny_model.class_names = ["x"] * 527
    assert cli.class_names_for(tiny_model, None)[0] == "x"


# ------------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_cli_with_only_missing_files_says_so_before_loading_a_model(offline_home, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "inference.py"), "nothing.wav", "gone.mp3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "no such file: nothing.wav, gone.mp3" in proc.stderr and "download" not in proc.stderr


@pytest.mark.slow
def test_cli_tags_files_writes_outputs_and_fails_on_bad_files(offline_home, tmp_path, write_audio):
    torch.manual_seed(3)
    net = get_model(pretrained=False, n_classes=3, **TINY_NET)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "passt": {"models": tiny_models_config(), "class_names": ["dog", "cat", "bird"]}}, ckpt)
    folder = tmp_path / "audio"
    folder.mkdir()
    write_audio(folder / "long.mp3", tone(4.2, 22050), 22050)
    write_audio(folder / "short.flac", tone(1), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF....garbage")
    (folder / "readme.txt").write_text("not picked up: not an audio extension")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "inference.py"), str(folder), "--model", str(ckpt), "--hop", "1",
         "--top-k", "2", "--csv", f"{out}.csv", "--json", f"{out}.json", "--plot", f"{out}.png",
         "--embeddings", f"{out}.npy", "--device", "cpu", "--precision", "fp32", "--workers", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr  # one file failed
    assert "broken.wav" in proc.stderr and "1 of 3 file(s) failed" in proc.stderr
    assert "long.mp3 (4.2" in proc.stdout and "4 windows" in proc.stdout and "max" in proc.stdout
    doc = json.loads(Path(f"{out}.json").read_text())
    assert doc["classes"] == ["dog", "cat", "bird"]
    assert [Path(f["file"]).name for f in doc["files"]] == ["long.mp3", "short.flac"]
    assert [Path(f["file"]).name for f in doc["failed"]] == ["broken.wav"]
    windows = doc["files"][0]["windows"]  # 2 s windows every second, the last one ending with the audio
    assert [w["start_s"] for w in windows][:3] == [0, 1, 2] and len(windows) == 4
    assert all(w["end_s"] - w["start_s"] == pytest.approx(2) for w in windows)
    assert windows[-1]["end_s"] == pytest.approx(doc["files"][0]["duration_s"], abs=1e-3)
    rows = list(csv.reader(Path(f"{out}.csv").open()))
    assert rows[0] == ["file", "window", "start_s", "end_s", "dog", "cat", "bird"]
    assert len(rows) == 1 + len(windows) + 1
    assert Path(f"{out}_001_long.png").stat().st_size > 1000 and Path(f"{out}_002_short.png").is_file()
    emb = np.load(f"{out}.npy")
    assert Path(f"{out}.files.txt").read_text().splitlines() == [f["file"] for f in doc["files"]]
    model = hear.configure(load_checkpoint(ckpt).place("cpu", "fp32"))
    expected = hear.get_scene_embeddings(torch.from_numpy(load_audio(folder / "long.mp3"))[None], model)
    np.testing.assert_allclose(emb[0], expected[0].numpy(), atol=1e-5)
    assert emb.shape == (2, 3 + 32)


def test_cli_takes_the_checkpoints_activation_and_names_the_window_it_uses(offline_home, tmp_path, write_audio,
                                                                           capsys):
    torch.manual_seed(4)
    net = get_model(pretrained=False, n_classes=3, **TINY_NET)
    ckpt = tmp_path / "single_label.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "passt": {"models": tiny_models_config(), "class_names": ["dog", "cat", "bird"],
                          "activation": "softmax"}}, ckpt)  # what training writes for one label per clip
    clip = write_audio(tmp_path / "clip.wav", tone(3), SR)
    args = [str(clip), "--model", str(ckpt), "--window", "1", "--workers", "0", "--precision", "fp32",
            "--json", str(tmp_path / "out.json")]
    assert tag(args) == 0
    header = capsys.readouterr().err
    assert "3 classes (softmax), 1 s windows" in header  # not the model's 2 s
    windows = json.loads((tmp_path / "out.json").read_text())["files"][0]["windows"]
    assert len(windows) == 5 and all(sum(w["scores"]) == pytest.approx(1, abs=1e-4) for w in windows)
    assert tag([*args, "--activation", "sigmoid"]) == 0 and "(sigmoid)" in capsys.readouterr().err

    assert tag([str(tmp_path / "gone.wav")]) == 2  # a user's error: the message, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: no such file:") and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="gone.wav"):
        tag([str(tmp_path / "gone.wav"), "-d"])


def tag(argv: list[str]) -> int:
    """``passt-tag ARGV`` in this process: its exit status."""
    from helpers.inference import tag_command

    with pytest.raises(SystemExit) as exit_:
        tag_command.run(argv)
    return exit_.value.code


def test_model_names_resolve_to_checkpoints_ensembles_and_archs(offline_home, tiny_release, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="Known architectures"):
        load_model("no_such_model")
    with pytest.raises(RuntimeError, match="passt-s-f128-p16-s10-ap.476-swa.pt"):  # first member, offline
        load_model("ensemble_s10")
    assert load_model("tiny_release").name == "tiny_release"


def test_safetensors_export_rebuilds_released_models_ensembles_and_checkpoints(tiny_release, tmp_path):
    """The safetensors file carries the config that rebuilds the model: loading it needs no release
    file and no --arch, and gives the same outputs (fp32, exactly) and class names."""
    from helpers.inference.export import export_model

    trained = tmp_path / "trained.ckpt"
    torch.manual_seed(5)
    net = get_model(pretrained=False, n_classes=3, **TINY_NET)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "passt": {"models": tiny_models_config(), "class_names": ["dog", "cat", "bird"]}}, trained)
    wave = torch.from_numpy(tone(2.5))[None]
    for name, model in (("released", load_released("tiny_release")), ("ensemble", load_ensemble(["tiny_release"] * 2)),
                        ("checkpoint", load_checkpoint(trained))):
        model.place("cpu", "fp32")
        names = model.class_names or [f"c{i}" for i in range(model.n_classes)]
        path = export_model(model, names, tmp_path, name, formats=["safetensors"])["safetensors"]
        cache_path(tiny_release.url).unlink(missing_ok=True)  # the file alone must do
        again = load_model(path).place("cpu", "fp32")
        assert again.class_names == names and type(again.net) is type(model.net)
        with torch.no_grad():
            for ours, theirs in zip(model(wave), again(wave), strict=True):
                assert torch.equal(ours, theirs), name
