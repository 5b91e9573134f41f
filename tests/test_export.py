"""Exports: the convolution front end against the mel front end, and the exported ONNX / .pt2 files
run from a temporary folder in a process that imports only onnxruntime or torch (not this
repository), on 10 s inputs, against this framework's outputs.

Compared in fp32 (the models are placed with precision "fp32", whatever PASST_CPU_PRECISION says).
Tolerance: 1e-4 absolute on logits and embeddings (measured: about 1e-7 for these tiny networks);
the front ends: 2e-4 on the normalised log-mel (both fp32 front ends are up to ~6e-5 from float64).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_checkpoints import write_tiny_checkpoint

from helpers.inference.export import ONNX_OPSET, DftMelFrontEnd, export_model, length_limits
from helpers.inference.model import load_checkpoint
from models.preprocess import AugmentMelSTFT

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
CLASSES = ["dog", "cat", "bird", "rain"]
ATOL = 1e-4


def float64_log_mel(mel: AugmentMelSTFT, wave: torch.Tensor) -> torch.Tensor:
    """The eval front end's function computed in float64 with torch.stft: the reference for both."""
    x = F.conv1d(wave.double().unsqueeze(1), mel.preemphasis.double()).squeeze(1)
    stft = torch.stft(x, mel.n_fft, hop_length=mel.hopsize, win_length=mel.win_length, window=mel.window.double(),
                      center=True, return_complex=True)
    return ((mel.eval_mel_basis.double() @ stft.abs().square() + 1e-5).log() + 4.5) / 5.0


@pytest.mark.parametrize(("n_mels", "hopsize"), [(128, 320), (128, 160), (128, 100), (64, 320)])
def test_convolution_front_end_equals_the_mel_front_end(n_mels, hopsize):
    torch.manual_seed(0)
    t = torch.arange(3 * SR) / SR
    waves = torch.stack([0.3 * torch.randn(3 * SR), 0.5 * torch.sin(2 * torch.pi * 440 * t), 1e-4 * torch.randn(3 * SR)])
    mel = AugmentMelSTFT(n_mels=n_mels, hopsize=hopsize).eval()
    with torch.no_grad():
        ours, theirs = DftMelFrontEnd(mel)(waves), mel(waves)
    reference = float64_log_mel(mel, waves)
    assert ours.shape == theirs.shape == (3, n_mels, mel.frames(3 * SR))
    assert (ours - theirs).abs().max() < 2e-4
    # as exact as torch.stft: both fp32 front ends are about equally far from float64
    assert (ours.double() - reference).abs().max() < 1e-4 and (theirs.double() - reference).abs().max() < 1e-4


def test_unknown_format_is_refused(tmp_path):
    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "m.ckpt", CLASSES, input_tdim=200))
    with pytest.raises(ValueError, match="unknown export formats"):
        export_model(model, CLASSES, tmp_path, "m", formats=["tflite"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A tiny 10 s checkpoint with class names, exported by the real command (one subprocess)."""
    root = tmp_path_factory.mktemp("export")
    ckpt = write_tiny_checkpoint(root / "tagger.ckpt", CLASSES, seed=3)
    proc = subprocess.run([sys.executable, str(ROOT / "export.py"), "--model", str(ckpt), "--out-dir", str(root / "out")],
                          capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"ckpt": ckpt, "out": root / "out", "stdout": proc.stdout, "stderr": proc.stderr}


# What runs outside the framework: a script in an empty folder, `python -I` (no PYTHONPATH, no
# script folder or working directory on sys.path), which checks that nothing of this repository
# (nor torch, for onnxruntime) was imported.
RUNNER = '''
import sys, json
import numpy as np
kind, model_path = sys.argv[1], sys.argv[2]
inputs = dict(np.load("inputs.npz"))
outputs = {}
if kind == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for key, wave in inputs.items():
        logits, embedding = session.run(["logits", "embedding"], {"waveform": wave})
        outputs[key + "/logits"], outputs[key + "/embedding"] = logits, embedding
else:
    import torch
    module = torch.export.load(model_path).module()
    with torch.no_grad():
        for key, wave in inputs.items():
            logits, embedding = module(torch.from_numpy(wave))
            outputs[key + "/logits"], outputs[key + "/embedding"] = logits.numpy(), embedding.numpy()
np.savez("outputs.npz", **outputs)
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("models", "helpers", "inference", "export", "app"))
json.dump({"repository_modules": ours, "torch": "torch" in sys.modules}, open("imports.json", "w"))
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_exported_files_run_alone_and_equal_the_framework(exported, kind, tmp_path):
    model = load_checkpoint(exported["ckpt"]).place("cpu", "fp32")
    shortest, longest = length_limits(model)
    rng = np.random.default_rng(0)
    inputs = {"10s_batch2": 0.1 * rng.standard_normal((2, 10 * SR)),
              "3.3s_batch3": 0.1 * rng.standard_normal((3, round(3.3 * SR))),
              "longest": 0.1 * rng.standard_normal((1, longest)),
              "shortest": 0.1 * rng.standard_normal((1, shortest))}
    inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    np.savez(run_dir / "inputs.npz", **inputs)
    (run_dir / "run.py").write_text(RUNNER)
    model_file = exported["out"] / f"tagger.{kind}"
    proc = subprocess.run([sys.executable, "-I", "run.py", kind, str(model_file)], capture_output=True, text=True,
                          cwd=run_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imports = json.loads((run_dir / "imports.json").read_text())
    assert imports["repository_modules"] == []
    assert imports["torch"] is (kind == "pt2")
    got = np.load(run_dir / "outputs.npz")
    for key, wave in inputs.items():
        with torch.no_grad():
            logits, embedding = model(torch.from_numpy(wave))
        assert got[f"{key}/logits"].shape == (wave.shape[0], len(CLASSES))
        np.testing.assert_allclose(got[f"{key}/logits"], logits.numpy(), atol=ATOL, rtol=0, err_msg=key)
        np.testing.assert_allclose(got[f"{key}/embedding"], embedding.numpy(), atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.slow
def test_class_names_and_limits_travel_with_the_export(exported):
    import onnx

    out = exported["out"]
    info = json.loads((out / "tagger.json").read_text())
    assert info["class_names"] == CLASSES
    assert info["input"]["sample_rate"] == SR and info["input"]["max_samples"] == 321600  # 10 s and one hop
    assert info["input"]["min_samples"] == 25 * 320 + 1 and info["onnx_opset"] == ONNX_OPSET
    proto = onnx.load(str(out / "tagger.onnx"))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["passt"]) == info
    assert {o.domain: o.version for o in proto.opset_import}[""] == ONNX_OPSET
    assert [i.name for i in proto.graph.input] == ["waveform"]
    assert [o.name for o in proto.graph.output] == ["logits", "embedding"]
    assert not list(out.glob("*.data"))  # weights inside the .onnx file
    assert sorted(Path(line).name for line in exported["stdout"].split()) == [
        "tagger.json", "tagger.onnx", "tagger.pt2", "tagger.safetensors"]
    # the command's own check ran the files on a 10 s clip
    for fmt in ("onnx", "pt2", "safetensors"):
        assert f"{fmt}: max |logit difference|" in exported["stderr"]


@pytest.mark.slow
def test_ensemble_exports_with_its_members_strides(tmp_path):
    import onnxruntime

    ckpt = write_tiny_checkpoint(tmp_path / "ens.ckpt", CLASSES, input_tdim=200, strides=(10, 16))
    model = load_checkpoint(ckpt).place("cpu", "fp32")
    paths = export_model(model, CLASSES, tmp_path / "out", "ens", formats=["onnx"])
    assert set(paths) == {"onnx", "json"}
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    shortest, longest = length_limits(model)
    assert shortest == (16 + 16 - 1) * 320 + 1  # two columns of the coarser member
    for samples in (shortest, 40000, longest):
        wave = torch.from_numpy(0.1 * np.random.default_rng(samples).standard_normal((2, samples)).astype(np.float32))
        logits, embedding = session.run(None, {"waveform": wave.numpy()})
        with torch.no_grad():
            expected = model(wave)
        np.testing.assert_allclose(logits, expected[0].numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(embedding, expected[1].numpy(), atol=ATOL, rtol=0)
