"""PaSST: the Patchout faSt Spectrogram Transformer (Koutini et al., Interspeech 2022): the network.

* :class:`PaSST` - overlapping conv patch embedding, separate frequency and time positional
  encodings on the patch grid, class + distillation tokens, timm transformer blocks (fused or
  explicit attention, whichever was measured faster: :class:`PaSSTAttention`) and structured /
  unstructured patchout in training;
* :func:`cut_blocks` - drop blocks of a (pretrained) network; :func:`flops_per_example` - its cost.

Around it, in their own modules: the registry of released architectures (:mod:`models.registry`),
the builder with the original's signature, ``get_model``, and the ensemble builder
(:mod:`models.build`), this network's checkpoint adaptation (:mod:`models.passt_weights`), the
measured attention table (:mod:`models.attention_paths`) and the ensemble (:mod:`models.ensemble`).
"""

from __future__ import annotations

import logging
import warnings
from functools import partial

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Attention, Block
from torch.utils.checkpoint import checkpoint

from models.attention_paths import fused_attention_is_faster

_logger = logging.getLogger(__name__)

PATCH_SIZE = 16


def patch_grid(input_fdim: int, input_tdim: int, fstride: int, tstride: int) -> tuple[int, int]:
    """Shape of the positional-encoding grid, ``(input // stride)`` per axis.

    This is what the released checkpoints were built with; it can exceed the conv's real output
    by one column (stride 12: 83 encodings for 82 patches) and the extra ones are simply unused.
    """
    return input_fdim // fstride, input_tdim // tstride


class PaSSTAttention(Attention):
    """timm attention that takes, for each call, the path measured faster for its device, precision
    (the autocast dtype when autocast is on) and sequence length (:func:`fused_attention_is_faster`);
    under ``torch.compile`` always the fused one. Both paths compute the same function.
    """

    @property
    def fused_attn(self) -> bool:
        """The path timm's ``forward`` takes. Compiled graphs take SDPA, which the compiler fuses: no
        table lookup and no attribute written in the graph (a gradient-checkpointed block must have
        no side effects for the compiler)."""
        return torch.compiler.is_compiling() or self._fused_attn

    @fused_attn.setter
    def fused_attn(self, fused: bool) -> None:
        self._fused_attn = fused

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            kind = x.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
            self.fused_attn = fused_attention_is_faster(kind, dtype, x.shape[1], torch.is_grad_enabled())
        return super().forward(x, *args, **kwargs)


class PaSST(nn.Module):
    """Audio spectrogram transformer with patchout.

    ``forward(x)`` takes ``[batch, in_chans, n_mels, frames]`` and returns ``(logits, embedding)``.
    The parameter names match the released checkpoints exactly.

    The methods timm's vision transformers offer work the same way here: :meth:`forward_features`
    (the tokens), :meth:`forward_head` (``pre_logits=True``: the embedding), :meth:`get_classifier`,
    :meth:`reset_classifier`, :meth:`set_grad_checkpointing` and :meth:`no_weight_decay`.
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
        self.grad_checkpointing = False

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

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them.

        A training step then keeps one ``[batch, tokens, embed_dim]`` tensor per block rather than
        everything the block computes (attention maps, MLP hidden states), for about one more
        forward pass of compute: longer clips and larger batches fit. Gradients are those without
        it: patchout and the time offset are drawn once, before the blocks; the recomputation
        replays the dropout and stochastic-depth draws from the RNG state it saved.
        """
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier: ``head`` (LayerNorm + Linear; an Identity after ``reset_classifier(0)``)."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` outputs; the rest stays trained.

        Keeps the head's LayerNorm and replaces its Linear (and the frozen distillation head), as
        loading a checkpoint into a model with another class count does. ``num_classes=0`` removes
        the classifier: the model then outputs its embedding (``forward_head(x, pre_logits=True)``).
        """
        self.num_classes = num_classes
        if num_classes <= 0:
            self.head, self.head_dist = nn.Identity(), None
            return
        like = self.cls_token
        norm = self.head[0] if isinstance(self.head, nn.Sequential) else \
            nn.LayerNorm(self.embed_dim, device=like.device, dtype=like.dtype)  # removed before: a new one
        self.head = nn.Sequential(norm, self._new_linear(num_classes))
        if self.num_tokens == 2:
            self.head_dist = self._new_linear(num_classes).requires_grad_(False)

    def _new_linear(self, num_classes: int) -> nn.Linear:
        """A head Linear initialised as in :meth:`_init_weights`, on the model's device and dtype."""
        like = self.cls_token
        linear = nn.Linear(self.embed_dim, num_classes, device=like.device, dtype=like.dtype)
        trunc_normal_(linear.weight, std=0.02)
        nn.init.zeros_(linear.bias)
        return linear

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
        x = self.pos_drop(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for block in self.blocks:
                # non-reentrant: the recomputation runs with gradients on, like the first pass, so
                # both take the same attention path (the choice depends on the grad mode)
                x = checkpoint(block, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.norm(x[:, : self.num_tokens])  # the norm is per token: only the tokens are needed

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from the tokens of :meth:`forward_features`; ``pre_logits=True``: the embedding
        (the mean of the class and distillation tokens, or the class token), before the classifier."""
        embedding = x.mean(dim=1) if self.num_tokens == 2 else x[:, 0]
        return embedding if pre_logits else self._classify(embedding)

    def _classify(self, embedding: torch.Tensor) -> torch.Tensor:
        kind = embedding.device.type
        if not self.training and torch.is_autocast_enabled(kind):
            # Evaluation scores keep fp32 resolution under mixed precision: bf16 logits are rounded to
            # 8 bits of mantissa (steps of 0.03 at a logit of -6), which ties clips in the ranking
            # metrics (mAP). The head is one small matmul; training keeps the original's autocast head.
            with torch.autocast(kind, enabled=False):
                return self.head(embedding.float())
        return self.head(embedding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, embedding)``; with a distillation token both read the mean of the two tokens."""
        embedding = self.forward_head(self.forward_features(x), pre_logits=True)
        return self._classify(embedding), embedding


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


__all__ = ["PATCH_SIZE", "PaSST", "PaSSTAttention", "cut_blocks", "flops_per_example", "patch_grid"]
