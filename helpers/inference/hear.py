"""The HEAR 2021 API for PaSST: a drop-in for ``hear21passt.base``, with this framework's models.

    from helpers.inference.hear import load_model, get_scene_embeddings, get_timestamp_embeddings

    model = load_model()                                  # PaSST-S (ap .476), as hear21passt.base
    audio = torch.zeros(3, 32000 * 15)                    # [n_sounds, samples], mono, 32 kHz
    embeddings, timestamps = get_timestamp_embeddings(audio, model)   # [3, 301, 1295], [3, 301] ms
    scene = get_scene_embeddings(audio, model)                        # [3, 1295]

The embeddings mean what they mean in ``hear21passt`` (see :mod:`helpers.inference.embeddings`):
logits and embedding concatenated (``mode="all"``), timestamp windows of 160 ms every 50 ms
centred on their timestamps, scene embeddings of long audio averaged over 10 s windows every
2.5 s. The model has the attributes HEAR asks for (``sample_rate``, ``scene_embedding_size``,
``timestamp_embedding_size``) and those of the original wrapper (``mode``, ``timestamp_window``,
``timestamp_hop``, ``max_model_window``, ``scene_hop``, in samples). It runs in fp32 unless asked
otherwise, so the numbers equal the original's (``benchmarks/compare_hear.py`` checks it).
"""

from __future__ import annotations

import torch

from helpers.inference.embeddings import embedding_size, scene_embeddings, sliding_embeddings
from helpers.inference.model import InferenceModel, load_checkpoint, load_named
from models.registry import HEAR_DEFAULT_ARCH

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "configure"]


def load_model(model_file_path: str = "", arch: str | None = None, mode: str = "all", device: str | None = None,
               precision: str = "fp32", timestamp_window_ms: float = 160, timestamp_hop_ms: float = 50,
               scene_hop_ms: float | None = None, swa: bool = False, batch_size: int = 64,
               trust_checkpoint: bool = False) -> InferenceModel:
    """A PaSST model with the HEAR attributes, on the GPU when there is one.

    Args:
        model_file_path: "" for the released weights of ``arch``; else a checkpoint of this
            framework's training, ``.ckpt`` or ``.safetensors`` (or, with ``arch``, any PaSST
            checkpoint; ``swa`` takes its SWA weights).
        arch: any model name of :mod:`models.registry` (architecture, alias, short name,
            ensemble); default ``passt_s_swa_p16_128_ap476`` as in ``hear21passt.base``; e.g.
            ``passt_s_kd_p16_128_ap486`` (the best single model) or ``passt_20sec`` (20 s windows,
            as ``hear21passt.base20sec``).
        mode: ``"all"`` (logits + embedding), ``"embed_only"`` or ``"logits"``.
        precision: ``"fp32"``, ``"auto"`` (bf16 where native), ``"bf16"``, ``"fp16"`` (GPU).
        scene_hop_ms: hop of the scene windows over long audio; default a quarter of the model's
            window (2.5 s for 10 s models, 5 s for 20 s ones; ``hear21passt.base30sec`` used 10 s).
        batch_size: windows per forward pass.
        trust_checkpoint: load ``model_file_path`` with a full unpickle even when it holds more
            than tensors and plain data: that runs any code in the file, so only for files you
            trust (default: such files are refused, see :func:`models.checkpoints.read_checkpoint`).
    """
    if model_file_path:
        model = load_checkpoint(model_file_path, swa=swa, arch=arch, trust_checkpoint=trust_checkpoint)
    else:
        model = load_named(arch or HEAR_DEFAULT_ARCH)
    return configure(model.place(device, precision), mode, timestamp_window_ms, timestamp_hop_ms, scene_hop_ms,
                     batch_size)


def configure(model: InferenceModel, mode: str = "all", timestamp_window_ms: float = 160,
              timestamp_hop_ms: float = 50, scene_hop_ms: float | None = None,
              batch_size: int = 64) -> InferenceModel:
    """Give ``model`` the HEAR attributes (see :func:`load_model` for the arguments)."""
    sr = model.sample_rate
    model.mode = mode
    model.max_model_window = model.window
    model.scene_hop = int(scene_hop_ms * sr / 1000) if scene_hop_ms else model.window // 4
    model.timestamp_window = int(timestamp_window_ms * sr / 1000)
    model.timestamp_hop = int(timestamp_hop_ms * sr / 1000)
    model.scene_embedding_size = model.timestamp_embedding_size = embedding_size(model, mode)
    model.batch_size = batch_size
    return model


def get_scene_embeddings(audio: torch.Tensor, model: InferenceModel) -> torch.Tensor:
    """``audio [n_sounds, samples]`` (mono, in [-1, 1], at ``model.sample_rate``) to ``[n_sounds, D]``."""
    model.eval()
    return scene_embeddings(model, audio, model.max_model_window, model.scene_hop, model.mode, model.batch_size)


def get_timestamp_embeddings(audio: torch.Tensor, model: InferenceModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``audio [n_sounds, samples]`` to embeddings ``[n_sounds, n_timestamps, D]`` and their centre
    times in milliseconds ``[n_sounds, n_timestamps]``."""
    model.eval()
    return sliding_embeddings(model, audio, model.timestamp_window, model.timestamp_hop, model.mode,
                              model.batch_size)
