"""Test support: state dicts in the original PaSST key layout, the original forward math, and
Lightning checkpoints as the original framework's training writes them.

All are written out independently of :mod:`models.passt` (no timm, plain tensor ops), so tests
comparing against them prove that released checkpoints load and compute the same outputs.
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

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


# ---------------------------------------------------------------- the original's Lightning files
class CMD(str):
    """A command string of the original's sacred fork (kk-sacred ``sacred.config_helpers.CMD``):
    its configs name dataset factories with it, and its checkpoints pickle it under that name."""


@contextmanager
def _kk_sacred_module():
    """``sacred.config_helpers`` holding :class:`CMD` while pickling (upstream sacred has no such module)."""
    name = "sacred.config_helpers"
    previous = sys.modules.get(name)
    module = types.ModuleType(name)
    module.CMD = CMD
    CMD.__module__ = name
    sys.modules[name] = module
    try:
        yield
    finally:
        CMD.__module__ = __name__
        if previous is None:
            del sys.modules[name]
        else:
            sys.modules[name] = previous


def original_lightning_checkpoint(sd: dict, swa_sd: dict | None = None) -> dict:
    """A checkpoint as the original framework's training writes it (pytorch-lightning 1.3, kk-sacred, munch).

    Its ``Ba3lModule`` saves the sacred config, a ``munch.DefaultMunch``, as hyper-parameters; the
    datasets config holds ``CMD`` strings; Lightning 1.3 keys callback states by the callback's
    class; AdamW, LambdaLR and the fp16 scaler store their states; the network is ``net.``, the
    SWA average ``net_swa.``, the mel front end ``mel.``.
    """
    from munch import DefaultMunch
    from pytorch_lightning.callbacks import ModelCheckpoint

    config = DefaultMunch.fromDict({
        "cmd": "ex_audioset.py with trainer.precision=16", "seed": 42, "lr": 2e-5, "use_mixup": True,
        "mixup_alpha": 0.3, "process_id": 1234,
        "models": {"net": {"instance_cmd": "get_model", "arch": "passt_s_swa_p16_128_ap476", "n_classes": 527,
                           "fstride": 10, "tstride": 10, "s_patchout_t": 40, "s_patchout_f": 4},
                   "mel": {"instance_cmd": "AugmentMelSTFT", "n_mels": 128, "sr": 32000, "hopsize": 320,
                           "fmax": None}},
        "datasets": {"training": {"batch_size": 12, "num_workers": 16, "train": True,
                                  "dataset": CMD("/basedataset.get_full_training_set"),
                                  "sampler": CMD("/basedataset.get_ft_weighted_sampler")},
                     "test": {"batch_size": 20, "validate": True, "dataset": CMD("/basedataset.get_test_set")}},
        "trainer": {"max_epochs": 130, "gpus": 1, "precision": 16, "num_sanity_val_steps": 0},
    })
    state = {f"net.{k}": v for k, v in sd.items()}
    state.update({f"net_swa.{k}": v for k, v in (swa_sd or {}).items()})
    state.update({"mel.window": torch.hann_window(800), "mel.preemphasis_coefficient": torch.tensor([[[-0.97, 1.0]]])})
    first = next(iter(sd.values()))
    return {
        "epoch": 11, "global_step": 100000, "pytorch-lightning_version": "1.3.0.dev0",
        "state_dict": state,
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": torch.tensor(0.4712),
                                        "best_model_path": "/runs/epoch=10-step=99999.ckpt", "current_score": None,
                                        "dirpath": "/runs"}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(100000.0), "exp_avg": torch.zeros_like(first),
                                            "exp_avg_sq": torch.zeros_like(first)}},
                              "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
                                                "amsgrad": False, "foreach": None, "maximize": False,
                                                "capturable": False, "initial_lr": 2e-5, "params": [0]}]}],
        "lr_schedulers": [{"base_lrs": [2e-5], "last_epoch": 11, "verbose": False, "_step_count": 12,
                           "_get_lr_called_within_step": False, "_last_lr": [2e-5], "lr_lambdas": [None]}],
        "native_amp_scaling_state": {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                     "growth_interval": 2000, "_growth_tracker": 1234},
        "hparams_name": None,
        "hyper_parameters": dict(config),
    }


def save_original_lightning_checkpoint(path, sd: dict, swa_sd: dict | None = None) -> None:
    """Write :func:`original_lightning_checkpoint` with ``torch.save``, as the original did."""
    with _kk_sacred_module():
        torch.save(original_lightning_checkpoint(sd, swa_sd), path)
