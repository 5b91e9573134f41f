"""PaSST: the Patchout faSt Spectrogram Transformer (Koutini et al., Interspeech 2022).

One model file, in the spirit of timm's ``vision_transformer.py``:

* :class:`PaSST` - the network: overlapping conv patch embedding, separate frequency and time
  positional encodings on the patch grid, class + distillation tokens, timm transformer blocks
  (fused or explicit attention, whichever was measured faster) and structured / unstructured patchout in training.
* :data:`ARCHS` - a registry of every released architecture, with its release URL and the
  settings it was trained with.
* :func:`get_model` - the one builder, with the original framework's signature and defaults.

* :func:`checkpoint_filter_fn` - this model's own checkpoint filter: ImageNet encodings, input
  channels, heads for other class counts, encodings for other strides or clip lengths;
  :func:`load_weights` applies it to any file :mod:`models.checkpoints` reads.

The ensemble of several networks is in :mod:`models.ensemble`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import adapt_input_conv
from timm.models.vision_transformer import Attention, Block

from models.checkpoints import cached_download, extract_state_dict, load_checked, read_checkpoint

_logger = logging.getLogger(__name__)

PATCH_SIZE = 16
_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"


@dataclass(frozen=True)
class ArchConfig:
    """One released architecture: how to build it and where its weights live.

    ``fstride``/``tstride``/``input_tdim``/``n_classes`` are the settings the checkpoint was
    trained with; :func:`get_model` warns (and adapts the encodings) when they are changed.
    ``hopsize`` is the STFT hop of the mel front end it was trained on (``AugmentMelSTFT``).
    """

    name: str
    url: str
    description: str
    fstride: int = 10
    tstride: int = 10
    input_fdim: int = 128
    input_tdim: int = 998
    n_classes: int = 527
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    hopsize: int = 320
    imagenet: bool = False  # weights come from an image model (pos_embed on a square grid)

    @property
    def file_name(self) -> str:
        """File name of the release, as stored in ``$TORCH_HOME/hub/checkpoints/``."""
        return self.url.rsplit("/", 1)[-1]


def _release(tag: str, file: str) -> str:
    return f"{_RELEASES}/{tag}/{file}"


_ARCH_LIST = [
    ArchConfig("passt_deit_bd_p16_384",
               "https://dl.fbaipublicfiles.com/deit/deit_base_distilled_patch16_384-d0272ac0.pth",
               "ImageNet DeiT-B distilled 384 start point; positional encodings adapted from the image grid",
               n_classes=1000, imagenet=True),
    ArchConfig("passt_s_swa_p16_128_ap476", _release("v0.0.1-audioset", "passt-s-f128-p16-s10-ap.476-swa.pt"),
               "PaSST-S AudioSet, stride 10, structured patchout, SWA, mAP .476"),
    ArchConfig("passt_s_swa_p16_128_ap4761", _release("v0.0.2-audioset", "passt-s-f128-p16-s10-ap.4761-swa.pt"),
               "PaSST-S AudioSet, stride 10, SWA, mAP .4761 (second run)"),
    ArchConfig("passt_s_p16_128_ap472", _release("v0.0.2-audioset", "passt-s-f128-p16-s10-ap.472.pt"),
               "PaSST-S AudioSet, stride 10, no SWA, mAP .472"),
    ArchConfig("passt_s_kd_p16_128_ap486", _release("v.0.0.9", "passt-s-kd-ap.486.pt"),
               "PaSST-S AudioSet trained with knowledge distillation, stride 10, mAP .486"),
    ArchConfig("passt_l_kd_p16_128_ap47", _release("v.0.0.10", "passt-l-kd-ap.47.pt"),
               "PaSST-L (light, depth 7) AudioSet with knowledge distillation, stride 10, mAP .47", depth=7),
    ArchConfig("passt_s_p16_s12_128_ap470", _release("v0.0.2-audioset", "passt-s-f128-p16-s12-ap.470.pt"),
               "PaSST-S AudioSet, stride 12, mAP .470", fstride=12, tstride=12),
    ArchConfig("passt_s_swa_p16_s12_128_ap473", _release("v0.0.2-audioset", "passt-s-f128-p16-s12-ap.473-swa.pt"),
               "PaSST-S AudioSet, stride 12, SWA, mAP .473", fstride=12, tstride=12),
    ArchConfig("passt_s_p16_s14_128_ap469", _release("v0.0.2-audioset", "passt-s-f128-p16-s14-ap.469.pt"),
               "PaSST-S AudioSet, stride 14, mAP .469", fstride=14, tstride=14),
    ArchConfig("passt_s_swa_p16_s14_128_ap471", _release("v0.0.2-audioset", "passt-s-f128-p16-s14-ap.471-swa.pt"),
               "PaSST-S AudioSet, stride 14, SWA, mAP .471", fstride=14, tstride=14),
    ArchConfig("passt_s_p16_s16_128_ap468", _release("v0.0.2-audioset", "passt-s-f128-p16-s16-ap.468.pt"),
               "PaSST-S AudioSet, stride 16 (no patch overlap), mAP .468", fstride=16, tstride=16),
    ArchConfig("passt_s_swa_p16_s16_128_ap473", _release("v0.0.2-audioset", "passt-s-f128-p16-s16-ap.473-swa.pt"),
               "PaSST-S AudioSet, stride 16, SWA, mAP .473", fstride=16, tstride=16),
    ArchConfig("passt_s_f128_20sec_p16_s10_ap474",
               _release("v0.0.5", "passt-s-f128-20sec-p16-s10-ap.474-swa.pt"),
               "PaSST-S AudioSet with 20 s time encodings (2000 frames), SWA, mAP .474", input_tdim=2000),
    ArchConfig("passt_s_f128_30sec_p16_s10_ap473",
               _release("v0.0.5", "passt-s-f128-30sec-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet with 30 s time encodings (3000 frames), SWA, mAP .473", input_tdim=3000),
    ArchConfig("passt_s_swa_f128_stfthop100_p16_s10_ap473",
               _release("v0.0.3-audioset", "passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet on STFT hop 100 (3200 frames per 10 s), SWA, mAP .473", input_tdim=3200,
               hopsize=100),
    ArchConfig("passt_s_swa_f128_stfthop160_p16_s10_ap473",
               _release("v0.0.3-audioset", "passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet on STFT hop 160 (2000 frames per 10 s), SWA, mAP .473", input_tdim=2000,
               hopsize=160),
    ArchConfig("openmic_passt_s_f128_10sec_p16_s10_ap85",
               _release("v0.0.5", "openmic-passt-s-f128-10sec-p16-s10-ap.85.pt"),
               "PaSST-S fine-tuned on OpenMIC-2018 (20 instruments), mAP .85", n_classes=20),
    ArchConfig("fsd50k_passt_s_f128_p16_s10_ap655",
               _release("v0.0.5", "fsd50k-passt-s-f128-p16-s10-ap.655.pt"),
               "PaSST-S fine-tuned on FSD50K (200 classes), stride 10, mAP .655", n_classes=200),
    ArchConfig("fsd50k_passt_s_n_f128_p16_s16_ap642",
               _release("v0.0.5", "fsd50k-passt-s-n-f128-p16-s16-ap.642.pt"),
               "PaSST-S fine-tuned on FSD50K, stride 16 (no overlap), mAP .642",
               fstride=16, tstride=16, n_classes=200),
    ArchConfig("passt_b_f128_p16_s16_ap_459", _release("v.0.0.7-audioset", "passt-b-f128-p16-s16-ap.459.pt"),
               "PaSST-B: AudioSet, stride 16, trained without patchout, mAP .459", fstride=16, tstride=16),
    ArchConfig("passt_u600_f128_p16_s16_ap_460", _release("v.0.0.7-audioset", "passt-u600-f128-p16-s16-ap.460.pt"),
               "PaSST-U600: AudioSet, stride 16, unstructured patchout of 600 patches, mAP .460",
               fstride=16, tstride=16),
]

#: Every released architecture by name.
ARCHS: dict[str, ArchConfig] = {a.name: a for a in _ARCH_LIST}

#: Short names used by the original framework and the hear21passt package.
ARCH_ALIASES: dict[str, str] = {
    "passt_20sec": "passt_s_f128_20sec_p16_s10_ap474",
    "passt_30sec": "passt_s_f128_30sec_p16_s10_ap473",
    "stfthop100": "passt_s_swa_f128_stfthop100_p16_s10_ap473",
    "stfthop160": "passt_s_swa_f128_stfthop160_p16_s10_ap473",
    "openmic": "openmic_passt_s_f128_10sec_p16_s10_ap85",
    "openmic2008": "openmic_passt_s_f128_10sec_p16_s10_ap85",
    "fsd50k": "fsd50k_passt_s_f128_p16_s10_ap655",
    "fsd50k-n": "fsd50k_passt_s_n_f128_p16_s16_ap642",
}


def resolve_arch(arch: str) -> ArchConfig:
    """Look up an architecture by name or alias; the error lists every known name."""
    name = ARCH_ALIASES.get(arch, arch)
    if name not in ARCHS:
        known = ", ".join(sorted(ARCHS)) + "; aliases: " + ", ".join(sorted(ARCH_ALIASES))
        raise ValueError(f"Unknown PaSST arch {arch!r}. Known architectures: {known}")
    return ARCHS[name]


def patch_grid(input_fdim: int, input_tdim: int, fstride: int, tstride: int) -> tuple[int, int]:
    """Shape of the positional-encoding grid, ``(input // stride)`` per axis.

    This is what the released checkpoints were built with; it can exceed the conv's real output
    by one column (stride 12: 83 encodings for 82 patches) and the extra ones are simply unused.
    """
    return input_fdim // fstride, input_tdim // tstride


#: measured speed of the two attention paths per device, precision and sequence length
#: (written by ``benchmarks/attention_paths.py --record``, each entry naming its machine)
ATTENTION_TABLE_PATH = Path(__file__).with_name("attention_paths.json")


@functools.cache
def _attention_table() -> dict:
    return json.loads(ATTENTION_TABLE_PATH.read_text())


@functools.lru_cache(maxsize=512)
def fused_attention_is_faster(device_type: str, dtype: torch.dtype, tokens: int, training: bool) -> bool:
    """Whether fused scaled-dot-product attention was measured faster than the explicit softmax path.

    Looks up :data:`ATTENTION_TABLE_PATH` for the device and precision, at the measured sequence
    length nearest to ``tokens`` (by ratio), timed forward-only (inference) or forward + backward
    (``training``, also used for inference when only that was measured). Combinations never
    measured use the fused kernel, PyTorch's default.
    """
    entries = _attention_table().get(device_type, {})
    entry = entries.get(str(dtype).removeprefix("torch."))
    if entry is not None and "same_as" in entry:
        entry = entries[entry["same_as"]]
    if entry is None:
        return True
    row = min(entry["rows"], key=lambda r: 0.0 if r["tokens"] is None else abs(math.log(r["tokens"] / tokens)))
    timing = row.get("training" if training else "inference") or row["training"]
    return timing["fused_ms"] <= timing["explicit_ms"]


class PaSSTAttention(Attention):
    """timm attention that takes, for each call, the path measured faster for its device, precision
    (the autocast dtype when autocast is on) and sequence length (:func:`fused_attention_is_faster`);
    under ``torch.compile`` always the fused one. Both paths compute the same function.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if torch.compiler.is_compiling():
            self.fused_attn = True  # compiled graphs take SDPA, which the compiler fuses: no table lookup in the graph
        else:
            kind = x.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
            self.fused_attn = fused_attention_is_faster(kind, dtype, x.shape[1], torch.is_grad_enabled())
        return super().forward(x, *args, **kwargs)


class PaSST(nn.Module):
    """Audio spectrogram transformer with patchout.

    ``forward(x)`` takes ``[batch, in_chans, n_mels, frames]`` and returns ``(logits, embedding)``.
    The parameter names match the released checkpoints exactly.
    """

    def __init__(
        self,
        u_patchout: int = 0,
        s_patchout_t: int = 0,
        s_patchout_f: int = 0,
        img_size: tuple[int, int] = (128, 998),
        stride: tuple[int, int] = (10, 10),
        in_chans: int = 1,
        num_classes: int = 527,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        distilled: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.u_patchout = u_patchout
        self.s_patchout_t = s_patchout_t
        self.s_patchout_f = s_patchout_f
        self.img_size = tuple(img_size)
        self.stride = tuple(stride)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.num_tokens = 2 if distilled else 1

        grid_f, grid_t = patch_grid(*self.img_size, *self.stride)
        self.patch_embed = nn.Module()  # keeps the released key name: patch_embed.proj.*
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=PATCH_SIZE, stride=self.stride)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.new_pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))  # for the tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, grid_t))
        self.pos_drop = nn.Dropout(drop_rate)

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        # stochastic depth grows linearly over the blocks (plain floats: also works on the meta device)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                  proj_drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer,
                  attn_layer=PaSSTAttention)
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        self.head_dist = nn.Linear(embed_dim, num_classes) if distilled else None
        self._init_weights()
        if self.head_dist is not None:
            # the logits come from `head` only (as in the original): the distillation head is kept for
            # checkpoint compatibility but frozen, so optimizers and DDP see no parameter without a gradient
            self.head_dist.requires_grad_(False)

    def _init_weights(self) -> None:
        for p in (self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed, self.cls_token):
            trunc_normal_(p, std=0.02)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that should not be weight-decayed (tokens and positional encodings)."""
        return {"new_pos_embed", "freq_new_pos_embed", "time_new_pos_embed", "cls_token", "dist_token"}

    @property
    def max_frames(self) -> int:
        """Longest input (in spectrogram frames) the time encodings cover."""
        return (self.time_new_pos_embed.shape[-1] - 1) * self.stride[1] + PATCH_SIZE

    def _check_input(self, x: torch.Tensor) -> None:
        expected = f"[batch, {self.in_chans}, {self.img_size[0]}, frames >= {PATCH_SIZE}]"
        if x.dim() != 4:
            raise ValueError(f"PaSST expects a spectrogram batch of shape {expected}; got {tuple(x.shape)}")
        _, chans, freq, frames = x.shape
        if chans != self.in_chans or freq != self.img_size[0] or frames < PATCH_SIZE:
            raise ValueError(f"PaSST expects a spectrogram batch of shape {expected}; got {tuple(x.shape)}")

    def _time_encodings(self, n_patches: int) -> tuple[torch.Tensor, int]:
        """Time encodings for ``n_patches`` columns, and how many columns to keep.

        Shorter inputs use a window of the encodings: in training at an offset drawn uniformly
        over the valid ones, on the device (no host round trip, no ``torch.compile`` graph
        break), in eval from the start. Longer inputs are cut.
        """
        enc = self.time_new_pos_embed
        available = enc.shape[-1]
        if n_patches > available:
            warnings.warn(
                f"Input has {n_patches} time patches but the time encodings cover {available} "
                f"(about {self.max_frames} frames); the input is cut to fit.", stacklevel=3)
            return enc, available
        if self.training and n_patches < available:
            offset = torch.randint(available - n_patches + 1, (1,), device=enc.device)
            return enc.index_select(3, offset + torch.arange(n_patches, device=enc.device)), n_patches
        # a gather, not a slice: traced with a dynamic clip length (torch.export, ONNX), a slice view
        # asks whether it covers every encoding (its contiguity), which would pin the length
        return enc.index_select(3, torch.arange(n_patches, device=enc.device)), n_patches

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Token outputs after the final norm: ``[batch, num_tokens, embed_dim]``."""
        self._check_input(x)
        x = self.patch_embed.proj(x)  # [B, E, F, T]
        batch = x.shape[0]
        time_enc, n_time = self._time_encodings(x.shape[-1])
        if n_time < x.shape[-1]:
            x = x[..., :n_time]
        freq_enc = self.freq_new_pos_embed[:, :, : x.shape[2]]

        # Structured patchout: drop whole time columns / frequency rows. Selecting before adding the
        # encodings gives the same result as the original (add, then select) on fewer elements.
        if self.training and self.s_patchout_t:
            keep = _random_keep(x.shape[-1], self.s_patchout_t, x.device)
            x, time_enc = x.index_select(3, keep), time_enc.index_select(3, keep)
        if self.training and self.s_patchout_f:
            keep = _random_keep(x.shape[2], self.s_patchout_f, x.device)
            x, freq_enc = x.index_select(2, keep), freq_enc.index_select(2, keep)
        x = x + (time_enc + freq_enc)

        x = x.flatten(2).transpose(1, 2)  # [B, N, E]
        if self.training and self.u_patchout:
            x = x.index_select(1, _random_keep(x.shape[1], self.u_patchout, x.device))

        tokens = self.cls_token + self.new_pos_embed[:, :1]
        if self.dist_token is not None:
            tokens = torch.cat((tokens, self.dist_token + self.new_pos_embed[:, 1:]), dim=1)
        x = torch.cat((tokens.expand(batch, -1, -1), x), dim=1)
        x = self.blocks(self.pos_drop(x))
        return self.norm(x[:, : self.num_tokens])  # the norm is per token: only the tokens are needed

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, embedding)``; with a distillation token both read the mean of the two tokens."""
        tokens = self.forward_features(x)
        embedding = tokens.mean(dim=1) if self.num_tokens == 2 else tokens[:, 0]
        kind = embedding.device.type
        if not self.training and torch.is_autocast_enabled(kind):
            # Evaluation scores keep fp32 resolution under mixed precision: bf16 logits are rounded to
            # 8 bits of mantissa (steps of 0.03 at a logit of -6), which ties clips in the ranking
            # metrics (mAP). The head is one small matmul; training keeps the original's autocast head.
            with torch.autocast(kind, enabled=False):
                return self.head(embedding.float()), embedding
        return self.head(embedding), embedding


def _random_keep(n: int, drop: int, device: torch.device) -> torch.Tensor:
    """Sorted indices of ``n - drop`` random positions, drawn on ``device`` (no host round trip)."""
    if drop >= n:
        raise ValueError(f"patchout would drop {drop} of only {n} patches along an axis")
    return torch.randperm(n, device=device)[: n - drop].sort().values


def cut_blocks(model: PaSST, cut_depth: int) -> PaSST:
    """Remove transformer blocks from a (pretrained) model.

    ``cut_depth > 0`` drops that many blocks right after the first one; ``cut_depth < 0`` keeps the
    first and last block and every ``-cut_depth``-th block between them.
    """
    if cut_depth == 0:
        return model
    blocks = list(model.blocks)
    if cut_depth > 0:
        if cut_depth > len(blocks) - 2:
            raise ValueError(f"cut_depth={cut_depth} must be between 1 and {len(blocks) - 2} "
                             f"for a model with {len(blocks)} blocks")
        kept = [blocks[0]] + blocks[cut_depth + 1:]
    else:
        kept = [blocks[0]] + blocks[1:-1:-cut_depth] + [blocks[-1]]
    _logger.info("cut_depth=%d: %d of %d blocks kept", cut_depth, len(kept), len(blocks))
    model.blocks = nn.Sequential(*kept)
    return model


def get_model(
    arch: str = "passt_s_kd_p16_128_ap486",
    pretrained: bool = True,
    n_classes: int = 527,
    in_channels: int = 1,
    fstride: int = 10,
    tstride: int = 10,
    input_fdim: int = 128,
    input_tdim: int = 998,
    u_patchout: int = 0,
    s_patchout_t: int = 0,
    s_patchout_f: int = 0,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
    cut_depth: int = 0,
) -> PaSST:
    """Build a PaSST network, optionally with the released weights of ``arch``.

    The signature and defaults are those of the original framework (its ``get_model`` defaults to
    the best single released model, ``passt_s_kd_p16_128_ap486``); ``depth``, ``embed_dim`` and
    ``num_heads`` override the architecture (for tiny models in tests and demos, from scratch),
    and ``cut_depth`` drops blocks of a pretrained model (see :func:`cut_blocks`).

    With ``pretrained=True`` the release file is taken from ``$TORCH_HOME/hub/checkpoints/`` when
    present (no network), else downloaded there. A different ``n_classes`` re-initialises the
    heads; different strides interpolate the positional encodings (both with a warning).
    """
    cfg = resolve_arch(arch)
    overrides = {"depth": depth, "embed_dim": embed_dim, "num_heads": num_heads}
    if pretrained and any(v is not None and v != getattr(cfg, k) for k, v in overrides.items()):
        raise ValueError(f"depth/embed_dim/num_heads overrides {overrides} do not fit the pretrained "
                         f"weights of {cfg.name}; use pretrained=False, or cut_depth to drop blocks")
    if pretrained and (fstride, tstride) != (cfg.fstride, cfg.tstride):
        warnings.warn(f"{cfg.name} was trained with strides {(cfg.fstride, cfg.tstride)}, "
                      f"now (fstride, tstride)=({fstride}, {tstride}): its positional encodings "
                      f"will be interpolated.", stacklevel=2)
    model = PaSST(
        u_patchout=u_patchout, s_patchout_t=s_patchout_t, s_patchout_f=s_patchout_f,
        img_size=(input_fdim, input_tdim), stride=(fstride, tstride), in_chans=in_channels,
        num_classes=n_classes, embed_dim=embed_dim or cfg.embed_dim, depth=depth or cfg.depth,
        num_heads=num_heads or cfg.num_heads,
    )
    model.arch = cfg.name
    if pretrained:
        path = cached_download(cfg.url, f"the weights of {cfg.name}")
        load_state_dict_into(model, extract_state_dict(read_checkpoint(path, url=cfg.url)), (cfg.fstride, cfg.tstride),
                    str(path))
    return cut_blocks(model, cut_depth)


def flops_per_example(model: PaSST, frames: int, training: bool = True) -> float:
    """Approximate matmul FLOPs of one forward pass (multiply-add = 2 FLOPs).

    Counts the patch-embedding conv, the attention and MLP matmuls of every block and the head,
    for the sequence length patchout leaves in training (or the full one in eval).
    """
    grid_f = (model.img_size[0] - PATCH_SIZE) // model.stride[0] + 1
    grid_t = min((frames - PATCH_SIZE) // model.stride[1] + 1, model.time_new_pos_embed.shape[-1])
    e = model.embed_dim
    patches = grid_f * grid_t
    conv = 2 * patches * e * model.in_chans * PATCH_SIZE * PATCH_SIZE
    if training:
        patches = (grid_f - model.s_patchout_f) * (grid_t - model.s_patchout_t) - model.u_patchout
    n = patches + model.num_tokens
    hidden = model.blocks[0].mlp.fc1.out_features if len(model.blocks) else 4 * e
    per_block = 2 * n * e * 3 * e + 2 * 2 * n * n * e + 2 * n * e * e + 2 * 2 * n * e * hidden
    head = 2 * e * model.num_classes
    return float(conv + len(model.blocks) * per_block + head)


# --------------------------------------------------------------------------------- checkpoints
HEAD_KEYS = ("head.1.weight", "head.1.bias", "head_dist.weight", "head_dist.bias")
_IMAGENET_HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


def _image_pos_embed_to_passt(pos_embed: torch.Tensor, num_tokens: int,
                              grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """An image model's square ``pos_embed`` as PaSST's token/frequency/time encodings.

    The image grid is resized (bicubic) to the patch grid, then averaged over time for the
    frequency encodings and over frequency for the time encodings.
    """
    tokens, image_grid = pos_embed[:, :num_tokens], pos_embed[0, num_tokens:]
    side = int(math.isqrt(image_grid.shape[0]))
    image_grid = image_grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(image_grid, size=grid, mode="bicubic", align_corners=False)
    return {
        "new_pos_embed": tokens,
        "freq_new_pos_embed": resized.mean(dim=3, keepdim=True),
        "time_new_pos_embed": resized.mean(dim=2, keepdim=True),
    }


def _resize_encoding(enc: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Interpolate a ``[1, E, F, 1]`` (axis 2) or ``[1, E, 1, T]`` (axis 3) encoding to ``size``."""
    target = (size, 1) if axis == 2 else (1, size)
    return F.interpolate(enc.float(), size=target, mode="bicubic", align_corners=False).to(enc.dtype)


def checkpoint_filter_fn(state: dict[str, torch.Tensor], model: PaSST,
                         trained_stride: tuple[int, int] | None = None, source: str = "checkpoint") -> dict:
    """Make ``state`` fit ``model``: image encodings, conv channels, heads and encoding grids.

    ``trained_stride`` tells how the checkpoint was trained. When the model uses other strides the
    encodings are interpolated to the new grid. When only the time length differs (same stride, a
    model built for other clip lengths) the model adopts the checkpoint's time encodings, so it
    behaves exactly like the released network; shorter inputs use a slice of them.
    Each adaptation is announced in one warning.
    """
    state = dict(state)
    model_state = model.state_dict()
    notes = []

    from_image = "time_new_pos_embed" not in state and "pos_embed" in state
    if from_image:
        grid = patch_grid(*model.img_size, *model.stride)
        state.update(_image_pos_embed_to_passt(state.pop("pos_embed"), model.num_tokens, grid))
        for key in _IMAGENET_HEAD_KEYS:  # ImageNet classifiers: 1000 classes, other layout
            state.pop(key, None)
        _logger.info("Adapted ImageNet positional encodings to the %s patch grid", grid)

    conv = state.get("patch_embed.proj.weight")
    if conv is not None and conv.dim() == 4 and conv.shape[1] != model.in_chans:
        state["patch_embed.proj.weight"] = adapt_input_conv(model.in_chans, conv, base_chans=conv.shape[1])
        if not from_image:  # image weights always need this: not worth a warning
            notes.append(f"patch embedding adapted from {conv.shape[1]} to {model.in_chans} input channels")

    head_mismatch = [k for k in HEAD_KEYS if k in state and k in model_state
                     and state[k].shape != model_state[k].shape]
    if head_mismatch:
        trained_classes = state[head_mismatch[0]].shape[0]
        for key in HEAD_KEYS:
            state.pop(key, None)
        notes.append(f"the heads were re-initialised for {model.num_classes} classes "
                     f"(the checkpoint has {trained_classes})")

    freq, time = state.get("freq_new_pos_embed"), state.get("time_new_pos_embed")
    want_f, want_t = model.freq_new_pos_embed.shape[2], model.time_new_pos_embed.shape[3]
    # Without a known training stride, a different frequency grid (the mel count is fixed) tells.
    stride_changed = (tuple(trained_stride) != tuple(model.stride) if trained_stride is not None
                      else freq is not None and freq.shape[2] != want_f)
    if freq is not None and freq.shape[2] != want_f:
        state["freq_new_pos_embed"] = _resize_encoding(freq, want_f, axis=2)
        notes.append(f"frequency encodings interpolated from {freq.shape[2]} to {want_f} rows")
    if time is not None and time.shape[3] != want_t:
        if stride_changed:  # the same clips on another grid: stretch the encodings onto it
            state["time_new_pos_embed"] = _resize_encoding(time, want_t, axis=3)
            notes.append(f"time encodings interpolated from {time.shape[3]} to {want_t} columns")
        else:  # a model built for another clip length: keep the released encodings as they are
            model.time_new_pos_embed = nn.Parameter(torch.zeros_like(time, device=model.time_new_pos_embed.device))
            _logger.info("Model adopts the %d time encodings of the %s (it was built for %d)",
                         time.shape[3], source, want_t)
            if time.shape[3] < want_t:
                notes.append(f"the {source} only has time encodings for {time.shape[3]} patches; "
                             f"longer inputs will be cut")

    if notes:
        warnings.warn(f"Loading {source} into a different configuration: " + "; ".join(notes) + ".",
                      stacklevel=3)
    return state


def load_state_dict_into(model: PaSST, state: dict[str, torch.Tensor],
                         trained_stride: tuple[int, int] | None = None, source: str = "checkpoint") -> None:
    """Filter ``state`` for ``model`` and load it; only the heads may be missing afterwards."""
    load_checked(model, checkpoint_filter_fn(state, model, trained_stride, source), source,
                 may_be_missing=("head.", "head_dist."))


def load_weights(model: PaSST, path: str | os.PathLike, swa: bool = False,
                 trained_stride: tuple[int, int] | None = None, trust_checkpoint: bool = False) -> PaSST:
    """Load a local checkpoint (state dict, Lightning ``.ckpt``, ImageNet file or ``.safetensors``) into ``model``.

    ``swa=True`` takes the ``net_swa.`` weights of a Lightning checkpoint. ``trained_stride``
    (fstride, tstride) of the checkpoint, when known, lets other strides interpolate the encodings.
    A file holding more than tensors and plain data is refused unless ``trust_checkpoint=True``
    (see :func:`models.checkpoints.read_checkpoint`).
    """
    checkpoint = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    load_state_dict_into(model, extract_state_dict(checkpoint, swa=swa), trained_stride, str(path))
    return model


__all__ = [
    "ARCHS", "ARCH_ALIASES", "ATTENTION_TABLE_PATH", "ArchConfig", "PaSST", "PaSSTAttention", "checkpoint_filter_fn",
    "cut_blocks", "flops_per_example", "fused_attention_is_faster", "get_model", "load_state_dict_into",
    "load_weights", "patch_grid", "resolve_arch",
]
