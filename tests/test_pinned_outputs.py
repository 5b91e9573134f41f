"""Outputs and metrics pinned to the values recorded before the registry/layout refactor (issue 17).

Each test computes, in fp32 on the CPU, what a tiny network gives for fixed weights and inputs
through one public path (the network builder, its train-mode patchout, checkpoint adaptation, the
ensemble, a released architecture and an ensemble named config through the tagging command, a
checkpoint through the HEAR API) and the metrics of a short training run, and compares them with
``tests/pinned_outputs.json``. Moving code must not change a number: the tolerances only absorb
the rounding of another CPU's kernels (AVX2 vs AVX-512, thread count), not a change of computation.

To record the file again (only when a change of the numbers is intended, and said so in the
commit): ``PASST_RECORD_PINNED=1 pytest tests/test_pinned_outputs.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from experiment_cli import data_config
from tiny_checkpoints import write_tiny_checkpoint

import inference as tagging_cli
from audioset.synthetic import write_labels_csv
from helpers.inference import hear
from helpers.inference.model import load_checkpoint
from models.build import get_ensemble_model, get_model
from models.hub_cache import cache_path
from models.passt_weights import load_weights
from models.registry import ARCHS, ENSEMBLES, ArchConfig

PINNED = Path(__file__).with_name("pinned_outputs.json")
RECORD = os.environ.get("PASST_RECORD_PINNED") == "1"
TINY = dict(depth=2, embed_dim=32, num_heads=2, input_tdim=120)
FORWARD_TOLERANCE = dict(rtol=1e-4, atol=1e-5)
TRAINING_TOLERANCE = dict(rtol=1e-3, atol=1e-4)


def _pinned(name: str, values, tolerance: dict) -> None:
    """Compare ``values`` (nested lists/arrays/floats) with the recorded ``name``; record it when asked."""
    values = np.asarray(values, dtype=np.float64)
    recorded = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    if RECORD:
        recorded[name] = values.round(7).tolist()
        lines = [f"  {json.dumps(key)}: {json.dumps(recorded[key])}" for key in sorted(recorded)]
        PINNED.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        return
    assert name in recorded, f"{name} was never recorded in {PINNED.name}"
    np.testing.assert_allclose(values, np.asarray(recorded[name]), err_msg=name, **tolerance)


def _spectrograms(frames: int = 120, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 1, 128, frames, generator=torch.Generator().manual_seed(seed))


def _waveform(seconds: float, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 32000)) / 32000
    return (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(t.shape, generator=g)).float()


def _tiny_released(name: str, seed: int, monkeypatch, **settings) -> ArchConfig:
    """A tiny architecture registered as released, its release file in the (offline) cache."""
    cfg = ArchConfig(name, f"https://example.invalid/{name}.pt", "test only", embed_dim=32, depth=1, num_heads=2,
                     input_tdim=200, **settings)
    monkeypatch.setitem(ARCHS, cfg.name, cfg)
    path = cache_path(cfg.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(get_model(pretrained=False, embed_dim=32, depth=1, num_heads=2, input_tdim=200,
                         fstride=cfg.fstride, tstride=cfg.tstride).state_dict(), path)
    return cfg


# ---------------------------------------------------------------------------------- the network
def test_network_outputs_in_eval_and_train_mode():
    torch.manual_seed(0)
    net = get_model(pretrained=False, n_classes=6, s_patchout_t=2, s_patchout_f=1, **TINY).eval()
    with torch.no_grad():
        logits, embedding = net(_spectrograms())
        _pinned("net_eval_logits", logits, FORWARD_TOLERANCE)
        _pinned("net_eval_embedding", embedding[:, :8], FORWARD_TOLERANCE)
        net.train()
        torch.manual_seed(2)  # patchout's draws
        _pinned("net_train_logits", net(_spectrograms())[0], FORWARD_TOLERANCE)


def test_checkpoint_adapted_to_other_strides_and_clip_length(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(get_model(pretrained=False, n_classes=6, **TINY).state_dict(), path)
    with pytest.warns(UserWarning, match="interpolated"):
        net = load_weights(get_model(pretrained=False, n_classes=6, fstride=12, tstride=12, depth=2, embed_dim=32,
                                     num_heads=2, input_tdim=150), path, trained_stride=(10, 10)).eval()
    with torch.no_grad():
        _pinned("adapted_logits", net(_spectrograms(150))[0], FORWARD_TOLERANCE)


def test_ensemble_outputs():
    torch.manual_seed(0)
    net = get_ensemble_model([("passt_s_swa_p16_128_ap476", 10, 10), ("passt_s_p16_s16_128_ap468", 16, 16)],
                             pretrained=False, n_classes=4, **TINY).eval()
    with torch.no_grad():
        logits, embedding = net(_spectrograms())
    _pinned("ensemble_logits", logits, FORWARD_TOLERANCE)
    assert embedding.shape == (2, 64)


# ---------------------------------------------------------------------------------- inference
def test_tagging_a_released_architecture_and_an_ensemble_named_config(offline_home, monkeypatch, tmp_path,
                                                                      write_audio, capsys):
    _tiny_released("tiny_pinned_a", 0, monkeypatch)
    _tiny_released("tiny_pinned_b", 1, monkeypatch, fstride=16, tstride=16)
    monkeypatch.setitem(ENSEMBLES, "tiny_pinned_ensemble", (".0", ["tiny_pinned_a", "tiny_pinned_b"]))
    labels = write_labels_csv(tmp_path / "labels.csv")
    audio = write_audio(tmp_path / "clip.wav", _waveform(3.3).numpy(), 32000)
    for model in ("tiny_pinned_a", "tiny_pinned_ensemble"):
        out = tmp_path / f"{model}.json"
        assert tagging_cli.main([str(audio), "--model", model, "--labels", str(labels), "--device", "cpu",
                                 "--precision", "fp32", "--workers", "0", "--json", str(out)]) == 0
        result = json.loads(out.read_text())["files"][0]
        _pinned(f"tagging_{model}_window_scores", [w["scores"][:16] for w in result["windows"]],
                FORWARD_TOLERANCE)
    capsys.readouterr()


def test_checkpoint_through_the_hear_api(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "tiny.ckpt", ["a", "b", "c"], input_tdim=200, seed=4, strides=(10, 16))
    model = hear.load_model(str(path), device="cpu")
    wave = _waveform(4.0)[None]
    scene = hear.get_scene_embeddings(wave, model)
    stamps, times = hear.get_timestamp_embeddings(wave[:, :16000], model)
    _pinned("hear_scene_embedding", scene[:, :24], FORWARD_TOLERANCE)
    _pinned("hear_timestamp_embedding", stamps[0, :4, :12], FORWARD_TOLERANCE)
    _pinned("hear_timestamps", times[0, :6], FORWARD_TOLERANCE)
    inference = load_checkpoint(path).place("cpu", "fp32")
    with torch.no_grad():
        _pinned("checkpoint_logits", inference(_waveform(2.0)[None])[0], FORWARD_TOLERANCE)


# ---------------------------------------------------------------------------------- training
@pytest.mark.slow  # a whole training run
def test_short_training_run_metrics(mini_audioset, tmp_path):
    """``mini_train tiny_model`` in fp32 (2 epochs of 5 batches, mixup, SWA, the importance sampler)."""
    from ex_audioset import ex

    updates = data_config(mini_audioset, sampler_replace=False)  # as recorded (mini_train now draws with replacement)
    updates.update(seed=1, output_dir=str(tmp_path), trainer={"enable_progress_bar": False, "precision": "32-true"},
                   wandb={"mode": "disabled"})
    run = ex.run(named_configs=["mini_train", "tiny_model"], config_updates=updates, options={"--loglevel": "ERROR"})
    keys = ["val_loss", "val_mAP", "val_roc_auc", "swa_val_loss", "swa_val_mAP", "swa_val_roc_auc"]
    assert run.result["val_examples"] == 8
    _pinned("training_metrics", [run.result[k] for k in keys], TRAINING_TOLERANCE)
