"""Test support: state dicts in the original PaSST key layout, and the original forward math.

Both are written out independently of :mod:`models.passt` (no timm, plain tensor ops), so tests
comparing against them prove that released checkpoints load and compute the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def original_state_dict(embed_dim: int = 64, depth: int = 2, n_classes: int = 527, grid: tuple = (12, 99),
                        in_chans: int = 1, mlp_ratio: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the exact key names and shapes of the released PaSST files."""
    g = torch.Generator().manual_seed(seed)
    e, h = embed_dim, embed_dim * mlp_ratio

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": rnd(1, 1, e), "dist_token": rnd(1, 1, e), "new_pos_embed": rnd(1, 2, e),
        "freq_new_pos_embed": rnd(1, e, grid[0], 1), "time_new_pos_embed": rnd(1, e, 1, grid[1]),
        "patch_embed.proj.weight": rnd(e, in_chans, 16, 16), "patch_embed.proj.bias": rnd(e),
        "norm.weight": 1 + rnd(e), "norm.bias": rnd(e),
        "head.0.weight": 1 + rnd(e), "head.0.bias": rnd(e),
        "head.1.weight": rnd(n_classes, e), "head.1.bias": rnd(n_classes),
        "head_dist.weight": rnd(n_classes, e), "head_dist.bias": rnd(n_classes),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + rnd(e), p + "norm1.bias": rnd(e),
            p + "attn.qkv.weight": rnd(3 * e, e), p + "attn.qkv.bias": rnd(3 * e),
            p + "attn.proj.weight": rnd(e, e), p + "attn.proj.bias": rnd(e),
            p + "norm2.weight": 1 + rnd(e), p + "norm2.bias": rnd(e),
            p + "mlp.fc1.weight": rnd(h, e), p + "mlp.fc1.bias": rnd(h),
            p + "mlp.fc2.weight": rnd(e, h), p + "mlp.fc2.bias": rnd(e),
        })
    return sd


@torch.no_grad()
def original_forward(sd: dict, x: torch.Tensor, stride: tuple, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode forward of the original network, step by step, from a state dict."""
    e = sd["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=stride)
    b, _, _, t = x.shape
    x = x + sd["time_new_pos_embed"][..., :t] + sd["freq_new_pos_embed"]
    x = x.flatten(2).transpose(1, 2)
    cls = (sd["cls_token"] + sd["new_pos_embed"][:, :1]).expand(b, -1, -1)
    dist = (sd["dist_token"] + sd["new_pos_embed"][:, 1:]).expand(b, -1, -1)
    x = torch.cat((cls, dist, x), dim=1)
    n = x.shape[1]
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (e,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, num_heads, e // num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (e // num_heads) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, e)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(x, (e,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + y
    x = F.layer_norm(x, (e,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    features = (x[:, 0] + x[:, 1]) / 2
    logits = F.linear(F.layer_norm(features, (e,), sd["head.0.weight"], sd["head.0.bias"], eps=1e-5),
                      sd["head.1.weight"], sd["head.1.bias"])
    return logits, features
