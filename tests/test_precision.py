"""The one precision decision (models/precision.py): every command, device and request, with the
CPU's answer forced both ways (by patching the hardware query and by PASST_CPU_PRECISION), and
what each command builds from it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from helpers.experiment.trainer import build_trainer
from helpers.inference.model import InferenceModel
from models import precision
from models.build import get_model
from models.precision import CPU_PRECISION_ENV, autocast_dtype, cpu_has_fast_bf16, decide_precision
from models.preprocess import AugmentMelSTFT

HALF_REQUESTS = (16, "16", "16-mixed", "fp16", "bf16", "bf16-mixed")


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-bf16"])
def native(request, monkeypatch) -> bool:
    """The CPU's answer, forced through the documented switch."""
    monkeypatch.setenv(CPU_PRECISION_ENV, "bf16" if request.param else "fp32")
    return request.param


def test_the_switch_forces_the_cpu_answer_and_rejects_other_values(monkeypatch):
    for value, expected in (("bf16", True), ("fp32", False), ("BF16", True), (" fp32 ", False)):
        monkeypatch.setenv(CPU_PRECISION_ENV, value)
        assert cpu_has_fast_bf16() is expected, value
    monkeypatch.setenv(CPU_PRECISION_ENV, "auto")
    assert cpu_has_fast_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setenv(CPU_PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="PASST_CPU_PRECISION='fp16'.*fp32, bf16 or auto"):
        cpu_has_fast_bf16()


def test_cpu_decisions_for_every_command_and_request(native, caplog):
    half = "bf16-mixed" if native else "32-true"
    assert decide_precision("cpu", "auto", "train") == half
    assert decide_precision("cpu", None, "infer") == half
    assert decide_precision("cpu", "auto", "evaluate") == "32-true"  # reproduces published numbers
    caplog.set_level(logging.WARNING)
    for asked in HALF_REQUESTS:
        for command in ("train", "evaluate", "infer"):
            assert decide_precision("cpu", asked, command) == half, (asked, command)
    # the fallback and the fp16 translation say why
    assert ("no native bfloat16" in caplog.text) is not native
    assert ("fp16 autocast does not exist on the CPU" in caplog.text) is native
    for asked in (32, "32", "32-true", "fp32"):
        assert decide_precision("cpu", asked, "train") == "32-true"
    with pytest.raises(ValueError, match="precision='17'"):
        decide_precision("cpu", "17")
    with pytest.raises(ValueError, match="command='fit'"):
        decide_precision("cpu", "auto", "fit")


@pytest.mark.parametrize("bf16_gpu", [True, False])
def test_gpu_decisions(monkeypatch, bf16_gpu):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    fastest = "bf16-mixed" if bf16_gpu else "16-mixed"
    for device in ("cuda", "gpu", torch.device("cuda:0")):
        assert decide_precision(device, "auto", "train") == fastest
        assert decide_precision(device, "auto", "infer") == fastest
        assert decide_precision(device, "auto", "evaluate") == "32-true"
    assert decide_precision("cuda", 16, "evaluate") == "16-mixed"  # the original's evaluation line keeps fp16
    assert decide_precision("cuda", "bf16-true", "train") == "bf16-true"


def test_autocast_dtypes():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32-true") is None


def test_the_trainer_asks_the_decision_for_its_command(native):
    half = "bf16-mixed" if native else "32-true"
    assert build_trainer({"max_epochs": 1, "accelerator": "cpu", "precision": 16}).precision == half
    assert build_trainer({"max_epochs": 1, "accelerator": "cpu", "precision": "auto"}).precision == half
    assert build_trainer({"max_epochs": 1, "accelerator": "cpu"}, command="evaluate").precision == "32-true"
    assert build_trainer({"max_epochs": 1, "accelerator": "cpu", "precision": "bf16"},
                         command="evaluate").precision == half


def _tiny_inference_model() -> InferenceModel:
    torch.manual_seed(0)
    net = get_model(pretrained=False, n_classes=5, depth=1, embed_dim=32, num_heads=2, input_tdim=200)
    return InferenceModel(net, AugmentMelSTFT())


def test_inference_follows_the_decision(native):
    model = _tiny_inference_model()
    assert model.place("cpu", "auto").autocast_dtype == (torch.bfloat16 if native else None)
    assert model.place("cpu", "fp32").autocast_dtype is None
    assert model.place("cpu", "fp16").autocast_dtype == (torch.bfloat16 if native else None)


@pytest.mark.precision
def test_bf16_inference_agrees_with_fp32_within_bf16_tolerance(monkeypatch):
    """Run bf16 for real (native here or emulated, forced): its outputs stay within what bf16's 8-bit
    mantissa allows of the fp32 reference (relative 2**-8 per rounding, a few roundings deep)."""
    monkeypatch.setenv(CPU_PRECISION_ENV, "bf16")
    model = _tiny_inference_model()
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 64000)).astype(np.float32) * 0.1)
    with torch.no_grad():
        ref_logits, ref_emb = model.place("cpu", "fp32")(wave)
        logits, emb = model.place("cpu", "bf16")(wave)
    assert model.autocast_dtype is torch.bfloat16 and logits.dtype == torch.float32
    assert not torch.equal(logits, ref_logits)  # bf16 really ran
    scale = ref_emb.abs().max()
    torch.testing.assert_close(emb, ref_emb, atol=0.03 * scale, rtol=0.03)
    torch.testing.assert_close(logits, ref_logits, atol=0.03 * ref_logits.abs().max(), rtol=0.03)


def test_the_precision_module_is_the_only_decision():
    """No other module compares precision names or asks the hardware (one decision, asked by all)."""
    import pathlib

    root = pathlib.Path(precision.__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("*.py"), *root.glob("helpers/**/*.py"), *root.glob("models/*.py")]:
        text = path.read_text()
        if path.name != "precision.py" and ("_is_mkldnn_bf16_supported" in text or "is_bf16_supported" in text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_evaluation_logits_keep_fp32_resolution_under_mixed_precision():
    """In eval mode the head runs in fp32 (bf16 logits would tie nearly equal scores in mAP);
    training keeps the autocast head of the original."""
    model = _tiny_inference_model().net
    x = torch.randn(3, 1, 128, 200)
    with torch.no_grad():
        ref_logits, _ = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, embedding = model(x)
            model.train()
            train_logits, _ = model(x)
    assert logits.dtype == torch.float32 and embedding.dtype == torch.float32
    assert train_logits.dtype == torch.bfloat16
    # not rounded to bf16: the scores differ from their own bf16 rounding
    assert not torch.equal(logits, logits.bfloat16().float())
    torch.testing.assert_close(logits, ref_logits, atol=0.03 * ref_logits.abs().max(), rtol=0.03)
