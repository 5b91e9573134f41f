"""Embeddings of the HEAR 2021 wrapper of PaSST (the ``hear21passt`` package), computed here.

What an embedding is (``mode``): ``"all"`` the logits and the embedding concatenated (527 + 768 =
1295 values for PaSST-S), ``"embed_only"`` the embedding, ``"logits"`` the logits.

* Timestamp embeddings: the audio is padded by half a window at both ends (reflected), cut into
  windows of ``window`` samples every ``hop`` samples (160 ms and 50 ms by default), and each
  window is embedded on its own; window ``i`` is centred on the original audio at
  ``i * hop / sample_rate`` seconds, and that time (in milliseconds) is its timestamp.
* Scene embeddings: audio no longer than ``max_window`` (the model's window: 10 s for the 10 s
  models) is embedded in one pass; longer audio is the mean of the timestamp embeddings with
  ``max_window``-long windows every ``scene_hop`` samples (2.5 s), padded the same way.

The reflection needs more samples than half a window; shorter audio is zero-padded instead
(the original fails there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.inference.model import InferenceModel

MODES = ("all", "embed_only", "logits")


def embed(model: InferenceModel, audio: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """One embedding per waveform of ``audio [n_sounds, samples]``, on the model's device."""
    logits, embedding = model(audio)
    if mode == "all":
        return torch.cat([logits, embedding], dim=1)
    if mode == "embed_only":
        return embedding
    if mode == "logits":
        return logits
    raise ValueError(f"mode={mode!r}: expected one of {MODES}")


def embedding_size(model: InferenceModel, mode: str) -> int:
    """How many values :func:`embed` returns per waveform."""
    return {"all": model.n_classes + model.embedding_size, "embed_only": model.embedding_size,
            "logits": model.n_classes}[mode]


@torch.inference_mode()
def sliding_embeddings(model: InferenceModel, audio: torch.Tensor, window: int, hop: int, mode: str = "all",
                       batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of centred windows (module docstring): ``[n_sounds, n_windows, D]`` and the
    timestamps in milliseconds ``[n_sounds, n_windows]``, both on the CPU.

    Windows are embedded ``batch_size`` at a time (all sounds of one window position together).
    """
    audio = torch.as_tensor(audio, dtype=torch.float32).cpu()
    n_sounds, n_samples = audio.shape
    pad = window // 2
    padded = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect" if n_samples > pad else "constant").squeeze(1)
    segments = padded.unfold(1, window, hop)  # [n_sounds, n_windows, window], a view
    n_windows = segments.shape[1]
    per_call = max(1, batch_size // n_sounds)
    out = []
    for i in range(0, n_windows, per_call):
        chunk = segments[:, i:i + per_call]  # [n_sounds, k, window]
        emb = embed(model, chunk.transpose(0, 1).reshape(-1, window), mode).cpu()
        out.append(emb.reshape(chunk.shape[1], n_sounds, -1).transpose(0, 1))
    timestamps = torch.arange(n_windows, dtype=torch.float32) * (hop * 1000.0 / model.sample_rate)
    return torch.cat(out, dim=1), timestamps.unsqueeze(0).expand(n_sounds, -1)


@torch.inference_mode()
def scene_embeddings(model: InferenceModel, audio: torch.Tensor, max_window: int, hop: int, mode: str = "all",
                     batch_size: int = 64) -> torch.Tensor:
    """One embedding per sound ``[n_sounds, D]`` on the CPU (module docstring)."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.shape[1] <= max_window:
        return embed(model, audio, mode).cpu()
    return sliding_embeddings(model, audio, max_window, hop, mode, batch_size)[0].mean(dim=1)
