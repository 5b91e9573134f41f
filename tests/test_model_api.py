"""The timm-style model API of PaSST (forward_head, reset_classifier, set_grad_checkpointing, ...).

The outputs of a fixed tiny model were recorded before the API existed (``tests/golden``); with its
features off the network must still give them. Rerecord only for an intended change of the math:
``PYTHONPATH=. .venv/bin/python tests/test_model_api.py --record``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from models.passt import get_model

GOLDEN = Path(__file__).with_name("golden") / "passt_tiny_outputs.pt"


def reference_outputs() -> dict[str, torch.Tensor]:
    """Eval and training outputs (patchout, random time offset) of a seeded tiny model, and one gradient."""
    torch.manual_seed(0)
    model = get_model(pretrained=False, depth=2, embed_dim=64, num_heads=4, n_classes=10,
                      s_patchout_t=3, s_patchout_f=1, u_patchout=5)
    x = torch.randn(2, 1, 128, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eval_logits, eval_embedding = model.eval()(x)
    torch.manual_seed(2)
    train_logits, train_embedding = model.train()(x)
    train_logits.sum().backward()
    return {"eval_logits": eval_logits, "eval_embedding": eval_embedding,
            "train_logits": train_logits.detach(), "train_embedding": train_embedding.detach(),
            "qkv_grad": model.blocks[0].attn.qkv.weight.grad[:, :8].clone()}  # a slice keeps the file small


def test_outputs_equal_those_recorded_before_the_model_api():
    """fp32. Bit-identical on a CPU of the recording's kind (same SIMD level: same kernels); others
    may round the last bits differently."""
    golden = torch.load(GOLDEN, weights_only=True)
    same_kernels = golden["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for name, value in reference_outputs().items():
        if same_kernels:
            assert torch.equal(value, golden[name]), name
        else:
            torch.testing.assert_close(value, golden[name], atol=1e-5, rtol=1e-5, msg=name)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    torch.save({**reference_outputs(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}, GOLDEN)
    print(f"wrote {GOLDEN}")
