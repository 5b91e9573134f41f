"""The timm-style model API of PaSST: forward_features/forward_head, reset_classifier, gradient
checkpointing (also as the ``models.net.grad_checkpointing`` key), no_weight_decay; on the ensemble.

The outputs of a fixed tiny model were recorded before the API existed (``tests/golden``); the
network must still give them, with checkpointing off and on. Rerecord only for an intended change
of the math: ``PYTHONPATH=. .venv/bin/python tests/test_model_api.py --record``. All comparisons
here are in fp32.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from models.build import build_net, get_model
from models.ensemble import PaSSTEnsemble
from models.passt import PaSST

GOLDEN = Path(__file__).with_name("golden") / "passt_tiny_outputs.pt"


def kernel_fingerprint() -> str:
    """What picks the CPU kernels: torch's SIMD level, the CPU model and the instruction sets oneDNN and
    MKL choose by (e.g. AMX), and a cap on oneDNN's (``ONEDNN_MAX_CPU_ISA``)."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    fields = dict(line.split(":", 1) for line in info if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = sorted(set(fields.get("flags", "").split()) & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"})
    return (f"{torch.backends.cpu.get_cpu_capability()} | {fields.get('vendor_id', '?')} {fields.get('model name', '?')} "
            f"| {' '.join(flags)} | ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')}")


def reference_outputs(**kwargs) -> dict[str, torch.Tensor]:
    """Eval and training outputs (patchout, random time offset) of a seeded tiny model, and one gradient."""
    torch.manual_seed(0)
    model = get_model(pretrained=False, depth=2, embed_dim=64, num_heads=4, n_classes=10,
                      s_patchout_t=3, s_patchout_f=1, u_patchout=5, **kwargs)
    x = torch.randn(2, 1, 128, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eval_logits, eval_embedding = model.eval()(x)
    torch.manual_seed(2)
    train_logits, train_embedding = model.train()(x)
    train_logits.sum().backward()
    return {"eval_logits": eval_logits, "eval_embedding": eval_embedding,
            "train_logits": train_logits.detach(), "train_embedding": train_embedding.detach(),
            "qkv_grad": model.blocks[0].attn.qkv.weight.grad[:, :8].clone()}  # a slice keeps the file small


@pytest.mark.parametrize("grad_checkpointing", [False, True])
def test_outputs_and_gradient_equal_those_recorded_before_the_model_api(grad_checkpointing):
    """Bit-identical where the kernels are the recording's (:func:`kernel_fingerprint`); other CPUs
    may round the last bits differently."""
    golden = torch.load(GOLDEN, weights_only=True)
    same_kernels = golden["kernels"] == kernel_fingerprint()
    for name, value in reference_outputs(grad_checkpointing=grad_checkpointing).items():
        if same_kernels:
            assert torch.equal(value, golden[name]), name
        else:
            torch.testing.assert_close(value, golden[name], atol=1e-5, rtol=1e-5, msg=name)


def tiny(**kwargs) -> PaSST:
    return get_model(**{"pretrained": False, "depth": 2, "embed_dim": 64, "num_heads": 4, "n_classes": 10, **kwargs})


# ---------------------------------------------------------------------------- features and head
def test_forward_is_forward_features_then_forward_head():
    model = tiny().eval()
    x = torch.randn(2, 1, 128, 200)
    with torch.no_grad():
        logits, embedding = model(x)
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 2, 64)  # class and distillation token
        assert torch.equal(model.forward_head(tokens), logits)
        assert torch.equal(model.forward_head(tokens, pre_logits=True), embedding)
        assert torch.equal(embedding, tokens.mean(dim=1))
    assert model.get_classifier() is model.head


def test_forward_head_keeps_evaluation_logits_in_fp32_under_bf16_autocast():
    model = tiny()
    tokens = torch.randn(2, 2, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.eval().forward_head(tokens).dtype == torch.float32
        assert model.forward_head(tokens, pre_logits=True).dtype == torch.float32
        assert model.train().forward_head(tokens).dtype == torch.bfloat16  # training: the autocast head


def test_undistilled_model_reads_the_class_token():
    model = PaSST(img_size=(128, 200), embed_dim=32, depth=1, num_heads=2, num_classes=3, distilled=False).eval()
    tokens = torch.randn(2, 1, 32)
    assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 0])


# ------------------------------------------------------------------------------ reset_classifier
def test_reset_classifier_gives_a_new_head_and_keeps_the_rest():
    model = tiny(n_classes=10).eval()
    x = torch.randn(2, 1, 128, 200)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        embedding = model(x)[1]
    norm = model.head[0]
    model.reset_classifier(7)
    with torch.no_grad():
        logits, same_embedding = model(x)
    assert logits.shape == (2, 7) and model.num_classes == 7
    assert torch.equal(same_embedding, embedding) and model.head[0] is norm  # the head's trained norm stays
    assert not model.head_dist.weight.requires_grad  # the distillation head stays frozen
    # the layout of a model built for 7 classes: its checkpoints load either way
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in tiny(n_classes=7).state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in before.items() if not k.startswith(("head.1.", "head_dist.")))
    assert model.head[1].bias.abs().sum() == 0 and 0 < model.head[1].weight.std() < 0.05  # initialised as built


def test_reset_classifier_zero_outputs_the_embedding_and_a_new_head_can_follow():
    model = tiny().eval()
    x = torch.randn(2, 1, 128, 200)
    model.reset_classifier(0)
    with torch.no_grad():
        logits, embedding = model(x)
    assert torch.equal(logits, embedding) and isinstance(model.get_classifier(), torch.nn.Identity)
    assert not any(k.startswith(("head", "head_dist")) for k in model.state_dict())
    model.reset_classifier(4)
    assert model(x)[0].shape == (2, 4) and set(model.state_dict()) == set(tiny(n_classes=4).state_dict())


def test_reset_classifier_follows_the_model_device_and_dtype():
    model = tiny().to(torch.float64)
    model.reset_classifier(3)
    assert model.head[1].weight.dtype == torch.float64 and model.head_dist.weight.dtype == torch.float64


# --------------------------------------------------------------------------- grad checkpointing
def _grads_after_two_steps(grad_checkpointing: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients of two training steps with every random draw PaSST makes (patchout, time offset,
    dropout, attention dropout, stochastic depth), and the next number of the RNG stream."""
    torch.manual_seed(0)
    model = PaSST(s_patchout_t=3, s_patchout_f=1, u_patchout=5, img_size=(128, 200), embed_dim=32, depth=3,
                  num_heads=2, num_classes=10, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.3).train()
    model.set_grad_checkpointing(grad_checkpointing)
    x = torch.randn(2, 1, 128, 150, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    for _ in range(2):
        logits, _ = model(x)
        logits.square().sum().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, torch.rand(1)


def test_checkpointed_gradients_equal_the_plain_ones_exactly():
    """Recomputation replays the same draws: the gradients are bit-identical (fp32), and the RNG
    stream continues where it would have without checkpointing."""
    plain, plain_next = _grads_after_two_steps(False)
    checkpointed, checkpointed_next = _grads_after_two_steps(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.equal(plain[name], checkpointed[name]), name
    assert torch.equal(plain_next, checkpointed_next)


def _saved_bytes(model: PaSST, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (outside checkpoints)."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)[0].sum()
    return sum(saved)


def test_checkpointing_keeps_only_the_block_inputs_for_the_backward():
    x = torch.randn(1, 1, 128, 400)
    model = tiny(depth=4, input_tdim=400).train()
    plain = _saved_bytes(model, x)
    model.set_grad_checkpointing()
    checkpointed = _saved_bytes(model, x)
    assert checkpointed < plain / 10


def test_checkpointing_is_skipped_without_gradients(monkeypatch):
    import models.passt

    model = tiny(grad_checkpointing=True).train()
    calls = []
    monkeypatch.setattr(models.passt, "checkpoint", lambda *a, **k: calls.append(1) or torch.utils.checkpoint.checkpoint(*a, **k))
    with torch.no_grad():  # no backward, nothing to recompute: the blocks run as they are
        model(torch.randn(1, 1, 128, 200))
    assert calls == []
    model(torch.randn(1, 1, 128, 200))
    assert len(calls) == len(model.blocks)


@pytest.mark.slow  # compiles twice (aot_eager: the autograd graph is traced, no code generated)
def test_checkpointing_compiles_without_graph_breaks_and_gives_the_eager_gradients():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = PaSST(s_patchout_t=3, s_patchout_f=1, img_size=(128, 300), embed_dim=32, depth=2, num_heads=2,
                  num_classes=5, drop_rate=0.1, drop_path_rate=0.3).train()
    x = torch.randn(2, 1, 128, 250)
    grads = {}
    for checkpointed, compiled in ((False, False), (True, True)):
        model.set_grad_checkpointing(checkpointed)
        model.zero_grad()
        run = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
        torch.manual_seed(5)
        run(x)[0].square().sum().backward()
        grads[compiled] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for name, grad in grads[False].items():
        assert torch.equal(grad, grads[True][name]), name
    torch._dynamo.reset()


def test_grad_checkpointing_config_key_reaches_the_network_and_ensemble_members():
    net_cfg = {"pretrained": False, "depth": 1, "embed_dim": 32, "num_heads": 2, "grad_checkpointing": True}
    assert build_net({"net": net_cfg}).grad_checkpointing is True
    ensemble = build_net({"net": net_cfg, "ensemble": [["passt_s_swa_p16_128_ap476", 10, 10],
                                                       ["passt_s_swa_p16_128_ap476", 16, 16]]})
    assert [m.grad_checkpointing for m in ensemble.models] == [True, True]
    assert build_net({"net": {**net_cfg, "grad_checkpointing": False}}).grad_checkpointing is False


# -------------------------------------------------------------------------------------- ensemble
def test_ensemble_offers_the_api_that_applies_to_a_mean_of_networks():
    a, b = tiny(n_classes=5), tiny(n_classes=5, fstride=16, tstride=16)
    ensemble = PaSSTEnsemble([a, b])
    params = dict(ensemble.named_parameters())
    assert "models.1.time_new_pos_embed" in ensemble.no_weight_decay() <= set(params)
    ensemble.set_grad_checkpointing()
    assert a.grad_checkpointing and b.grad_checkpointing
    ensemble.reset_classifier(3)
    x = torch.randn(2, 1, 128, 200)
    assert ensemble.eval()(x)[0].shape == (2, 3)
    ensemble.reset_classifier(0)
    with torch.no_grad():
        logits, embeddings = ensemble(x)
    torch.testing.assert_close(logits, (embeddings[:, :64] + embeddings[:, 64:]) / 2, rtol=0, atol=1e-6)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    torch.save({**reference_outputs(), "kernels": kernel_fingerprint()}, GOLDEN)
    print(f"wrote {GOLDEN}")
