"""Fused scaled-dot-product attention vs explicit softmax attention, per sequence length.

Times one PaSST-S attention layer (768 wide, 12 heads: qkv, attention, projection) with each
path, forward only (inference, no grad) and forward + backward (training), for the sequence
lengths PaSST meets (14 tokens: a 160 ms HEAR window; 1190: 10 s without patchout; 2390: 20 s).
Both paths compute the same function; ``models.passt.PaSSTAttention`` takes the faster one from
the table this script records (``--record`` writes ``models/attention_paths.json`` for this
device and precision, naming the machine).

    .venv/bin/python benchmarks/attention_paths.py                 # fp32 on the CPU, print only
    .venv/bin/python benchmarks/attention_paths.py --record        # ... and record it
    .venv/bin/python benchmarks/attention_paths.py --dtype bfloat16 --record   # only where bf16 is native
    .venv/bin/python benchmarks/attention_paths.py --breakdown 1190   # where a block's time goes, per path
"""

from __future__ import annotations

import argparse
import json

import torch

from helpers.training.speed import machine_description, time_steps
from models.attention_paths import ATTENTION_TABLE_PATH
from models.passt import PaSSTAttention

TOKENS = (14, 50, 110, 250, 500, 750, 1000, 1190, 1500, 2390)


def measure(tokens: int, dtype: torch.dtype, device: str, batch: int, reps: int, training: bool) -> dict[str, float]:
    """Milliseconds per call of each path: the best of ``reps`` samples, the two paths interleaved (on
    shared cores the minimum is the least disturbed figure); short sequences average many calls per
    sample, so that scheduling delays of single calls do not decide."""
    torch.manual_seed(0)
    layer = PaSSTAttention(768, num_heads=12, qkv_bias=True).to(device)
    x = torch.randn(batch, tokens, 768, device=device, requires_grad=training)
    low = dtype != torch.float32

    def call(fused: bool):
        def step():
            layer.fused_attn = fused
            with torch.autocast(device, dtype=dtype, enabled=low), torch.set_grad_enabled(training):
                # the parent's forward: PaSSTAttention would override fused_attn with its own choice
                out = super(PaSSTAttention, layer).forward(x)
            if training:
                out.float().sum().backward()
        return step

    times: dict[str, list[float]] = {"fused": [], "explicit": []}
    calls = max(1, 2000 // tokens)
    for path in times:  # warm-up: kernel selection, allocations
        time_steps(call(path == "fused"), 2, device)
    for _ in range(reps):
        for path in times:
            times[path].append(1000 * time_steps(call(path == "fused"), calls, device) / calls)
    return {f"{path}_ms": min(t) for path, t in times.items()}


#: how profiler ops are grouped by --breakdown (self time; anything else is "other")
GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
          "fused attention kernel": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                     "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
          "softmax": ("aten::_softmax", "aten::_softmax_backward_data")}


def breakdown(tokens: int, dtype: torch.dtype, device: str, batch: int) -> None:
    """Where the time of one PaSST-S block (forward + backward) goes, for each attention path."""
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    block = Block(768, 12, qkv_bias=True, attn_layer=PaSSTAttention).to(device)
    x = torch.randn(batch, tokens, 768, device=device, requires_grad=True)
    print(f"\nOne PaSST-S block, {tokens} tokens, batch {batch}, {str(dtype).removeprefix('torch.')}, "
          f"forward + backward: self time by op group")
    print("| path | total ms | " + " | ".join(GROUPS) + " | other |\n|---|---:|" + "---:|" * (len(GROUPS) + 1))
    for fused in (True, False):
        def step(fused=fused):
            block.attn.fused_attn = fused
            with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                # the parent's forward keeps the path set above
                out = x + block.ls1(super(PaSSTAttention, block.attn).forward(block.norm1(x)))
                out = out + block.ls2(block.mlp(block.norm2(out)))
            out.float().sum().backward()
        time_steps(step, 2, device)
        with torch.profiler.profile() as prof:
            step()
        times = {e.key: e.self_device_time_total if device == "cuda" else e.self_cpu_time_total
                 for e in prof.key_averages()}
        total = sum(times.values())
        shares = {g: sum(t for k, t in times.items() if k in ops) for g, ops in GROUPS.items()}
        other = total - sum(shares.values())
        cells = " | ".join(f"{100 * v / total:.0f}%" for v in [*shares.values(), other])
        print(f"| {'fused' if fused else 'explicit'} | {total / 1000:.0f} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--record", action="store_true", help=f"write the result into {ATTENTION_TABLE_PATH}")
    parser.add_argument("--breakdown", type=int, metavar="TOKENS",
                        help="instead: profile one whole block at this length (where the time goes)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.breakdown:
        print(f"Machine: {machine_description(args.device)}")
        breakdown(args.breakdown, dtype, args.device, args.batch)
        return
    where = machine_description(args.device)
    print(f"Machine: {where}; {args.dtype}, batch {args.batch}, best of {args.reps}\n")
    print("| tokens | inference fused ms | inference explicit ms | training fused ms | training explicit ms |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for tokens in args.tokens:
        infer = measure(tokens, dtype, args.device, args.batch, args.reps, training=False)
        train = measure(tokens, dtype, args.device, args.batch, args.reps, training=True)
        rows.append({"tokens": tokens, "inference": infer, "training": train})
        print(f"| {tokens} | {infer['fused_ms']:.2f} | {infer['explicit_ms']:.2f} | "
              f"{train['fused_ms']:.2f} | {train['explicit_ms']:.2f} |", flush=True)
    if args.record:
        table = json.loads(ATTENTION_TABLE_PATH.read_text())
        table.setdefault(torch.device(args.device).type, {})[args.dtype] = {
            "machine": where, "measured_by": f"benchmarks/attention_paths.py (one PaSST-S attention layer, "
                                             f"batch {args.batch}, best of {args.reps})",
            "rows": rows}
        ATTENTION_TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"\nrecorded in {ATTENTION_TABLE_PATH}")


if __name__ == "__main__":
    main()
