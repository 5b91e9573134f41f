"""Fidelity of the accelerator against the CPU: the same network, weights and input on both.

The reference is the CPU in fp32 (what the tests check against the original implementation).
On ``--device`` the network (eval mode: no patchout, no SpecAugment) and the mel front end run in
fp32 (TF32 matmuls off and on), and under bf16 and fp16 autocast; the table gives the largest
difference of the logits and of the embedding, and the worst relative to the logits' range.

    python benchmarks/cuda_fidelity.py                      # PaSST-S on the GPU
    python benchmarks/cuda_fidelity.py --device cpu --tiny  # the dry run: a tiny network on the CPU

Exit status 1 when fp32 (TF32 off) differs by more than ``--tolerance`` (default 1e-4).
"""

from __future__ import annotations

import argparse
import sys

import torch

from helpers.training.speed import machine_description
from models.build import get_model
from models.preprocess import AugmentMelSTFT


def run(net: torch.nn.Module, mel: torch.nn.Module, wave: torch.Tensor, device: str, dtype: torch.dtype | None,
        tf32: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and embedding (fp32, on the CPU) of ``wave`` through the mel front end and ``net`` on ``device``."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        net, mel, wave = net.to(device), mel.to(device), wave.to(device)
        with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            spec = mel(wave).unsqueeze(1)
            logits, emb = net(spec)
        return logits.float().cpu(), emb.float().cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny network (1 block, width 32): the dry run")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    torch.manual_seed(0)
    size = dict(depth=1, embed_dim=32, num_heads=2, input_tdim=200) if args.tiny else {}
    net = get_model(pretrained=False, **size).eval()
    mel = AugmentMelSTFT().eval()
    wave = torch.randn(args.batch, 32000 * (2 if args.tiny else 10)) * 0.1
    ref_logits, ref_emb = run(net, mel, wave, "cpu", None, tf32=False)
    scale = float(ref_logits.abs().max())
    print(f"Machine: {machine_description(args.device)}; reference: the CPU in fp32; "
          f"{'tiny network' if args.tiny else 'PaSST-S'}, batch {args.batch}\n")
    print("| on | precision | max abs diff, logits | max abs diff, embedding | relative to the logits' range |")
    print("|---|---|---:|---:|---:|")
    worst_fp32 = 0.0
    half = [("bf16 autocast", torch.bfloat16, False), ("fp16 autocast", torch.float16, False)]
    for name, dtype, tf32 in [("fp32", None, False), ("fp32, TF32 matmuls", None, True), *half]:
        if args.device == "cpu" and tf32:
            continue  # no TF32 on a CPU
        logits, emb = run(net, mel, wave, args.device, dtype, tf32)
        diff_logits, diff_emb = float((logits - ref_logits).abs().max()), float((emb - ref_emb).abs().max())
        if name == "fp32":
            worst_fp32 = max(diff_logits, diff_emb)
        print(f"| {args.device} | {name} | {diff_logits:.2e} | {diff_emb:.2e} | {diff_logits / scale:.2e} |", flush=True)
    print(f"\nfp32 on {args.device} against the CPU: {worst_fp32:.2e} (tolerance {args.tolerance:g})")
    sys.exit(0 if worst_fp32 <= args.tolerance else 1)


if __name__ == "__main__":
    main()
