"""Exporting a model as files that run without this framework: ONNX and ``torch.export`` (``.pt2``).

The exported graph is :class:`WaveformTagger`: waveforms ``[batch, samples]`` at 32 kHz in,
``(logits, embedding)`` out, the mel front end included, with a dynamic batch and a dynamic clip
length from :func:`length_limits` (two time patches) up to the longest input the time encodings
take (``InferenceModel.max_samples``: 10 s plus one hop for the 10 s models). Both files are
made from one ``torch.export`` program, so they compute the same graph; a JSON file beside them
carries the class names and what a caller needs to feed the model.

The front end is :class:`DftMelFrontEnd`: the eval-mode ``AugmentMelSTFT`` with its STFT written
as a convolution with a windowed DFT basis. ONNX has an STFT operator (opset 17), but
onnxruntime runs it on the CPU only, and ``torch.stft`` returns complex numbers that exporters
handle unevenly; a convolution runs on every execution provider. It costs 1.6 GFLOP per 10 s
clip (0.6% of PaSST-S) and is as exact as ``torch.stft`` in fp32 (both differ from a float64
reference by up to ~6e-5 on the normalised log-mel; ``tests/test_export.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers.inference.model import InferenceModel, networks
from models.passt import PATCH_SIZE
from models.preprocess import AugmentMelSTFT
from models.safetensors_file import write_safetensors

#: opset 18: onnxruntime runs every operator of the graph on the CPU and CUDA execution providers
#: (LayerNormalization needs 17); it is also the torch exporter's native opset, so no conversion
ONNX_OPSET = 18
#: onnx and pt2 run without this framework; safetensors holds the weights and the record that rebuilds
#: the model in this framework (or any code that reads its ``models`` config), and cannot carry code
FORMATS = ("onnx", "pt2", "safetensors")


class DftMelFrontEnd(nn.Module):
    """The eval-mode mel front end of ``mel`` (same buffers, same function) with the STFT as a convolution.

    ``torch.stft(center=True)`` reflect-pads ``n_fft // 2`` samples at both ends and windows each
    frame with the ``win_length`` Hann window centred in ``n_fft``; the convolution takes only the
    ``win_length`` non-zero taps, so the padded signal is trimmed by the window's offset at both ends.
    """

    def __init__(self, mel: AugmentMelSTFT) -> None:
        super().__init__()
        self.hopsize, self.n_fft, self.bins = mel.hopsize, mel.n_fft, mel.n_fft // 2 + 1
        self.offset = (mel.n_fft - mel.win_length) // 2
        taps = torch.arange(mel.win_length, dtype=torch.float64) + self.offset
        freqs = torch.arange(self.bins, dtype=torch.float64)
        angle = 2 * math.pi * freqs[:, None] * taps[None] / mel.n_fft  # computed in float64, stored in fp32
        window = mel.window.double()
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # [2 bins, win_length]
        self.register_buffer("dft_basis", basis.float().unsqueeze(1))
        self.register_buffer("preemphasis", mel.preemphasis.detach().clone())
        self.register_buffer("mel_basis", mel.eval_mel_basis.detach().clone())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` to normalised log-mel spectrograms ``[batch, n_mels, frames]``."""
        x = F.conv1d(wave.unsqueeze(1), self.preemphasis)
        pad = self.n_fft // 2
        x = F.pad(x, (pad, pad), mode="reflect")
        x = x[..., self.offset:x.shape[-1] - self.offset]
        spectrum = F.conv1d(x, self.dft_basis, stride=self.hopsize)  # [batch, 2 bins, frames]
        power = spectrum[:, :self.bins].square() + spectrum[:, self.bins:].square()
        mel = torch.matmul(self.mel_basis, power)
        return ((mel + 1e-5).log() + 4.5) / 5.0


class WaveformTagger(nn.Module):
    """What is exported: waveforms ``[batch, samples]`` to ``(logits, embedding)``, in fp32."""

    def __init__(self, model: InferenceModel) -> None:
        super().__init__()
        self.mel = DftMelFrontEnd(model.mel)
        self.net = model.net

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.mel(waveform).unsqueeze(1))


def length_limits(model: InferenceModel) -> tuple[int, int]:
    """The shortest and longest waveforms (samples) the exported model takes.

    The longest: what the time encodings cover. The shortest: two columns of patches, because one
    column would be a special case of the graph (a length-1 time axis broadcasts); shorter audio
    is zero-padded to it by the caller.
    """
    stride = max(m.stride[1] for m in networks(model.net))
    return (PATCH_SIZE + stride - 1) * model.mel.hopsize + 1, model.max_samples


def export_program(model: InferenceModel) -> torch.export.ExportedProgram:
    """:class:`WaveformTagger` of ``model`` traced by ``torch.export`` with dynamic batch and length."""
    shortest, longest = length_limits(model)
    tagger = WaveformTagger(model).cpu().float().eval()
    example = torch.randn(2, (shortest + longest) // 2)  # away from the limits: nothing gets specialised
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("samples", min=shortest, max=longest)}
    with torch.no_grad():
        # guards that hold over the whole range but that the shape solver cannot prove (divisibility
        # in reshapes) become run-time checks instead of export errors
        return torch.export.export(tagger, (example,), dynamic_shapes={"waveform": dims},
                                   prefer_deferred_runtime_asserts_over_guards=True)


def metadata(model: InferenceModel, class_names: Sequence[str], source: str, activation: str) -> dict:
    """What a caller of the exported files needs: inputs, outputs, limits and the class names."""
    shortest, longest = length_limits(model)
    return {
        "model": model.name, "source": source,
        "input": {"name": "waveform", "shape": ["batch", "samples"], "dtype": "float32",
                  "sample_rate": model.sample_rate, "channels": "mono, in [-1, 1]",
                  "min_samples": shortest, "max_samples": longest,
                  "note": "pad shorter audio with zeros; cut longer audio into windows"},
        "outputs": {"logits": ["batch", model.n_classes], "embedding": ["batch", model.embedding_size]},
        "activation": activation, "onnx_opset": ONNX_OPSET,
        "class_names": list(class_names),
    }


def export_model(model: InferenceModel, class_names: Sequence[str], out_dir: str | os.PathLike, name: str,
                 formats: Sequence[str] = FORMATS, source: str = "", activation: str = "sigmoid") -> dict[str, Path]:
    """Write ``<name>.onnx``, ``<name>.pt2``, ``<name>.safetensors`` (those of ``formats``) and
    ``<name>.json`` into ``out_dir``.

    The ONNX file is self-contained (weights inside; PaSST-S is far below protobuf's 2 GB limit)
    and carries the JSON as its ``passt`` metadata too. The safetensors file holds the network's
    weights with the record a checkpoint of this framework carries (its ``models`` config, class
    names and activation): ``passt-tag --model NAME.safetensors`` and every other loader rebuild the
    model from it.
    Returns the paths by format.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; known: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = metadata(model, class_names, source, activation)
    paths = {"json": out / f"{name}.json"}
    if "safetensors" in formats:
        if model.models_config is None:
            raise ValueError("this model does not know the config that rebuilds it; export onnx and pt2 only")
        record = {"models": model.models_config, "class_names": list(class_names) if class_names else None,
                  "experiment": None, "activation": activation}
        paths["safetensors"] = write_safetensors(out / f"{name}.safetensors", model.net.state_dict(), record)
    if not {"pt2", "onnx"} & set(formats):
        paths["json"].write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        return paths
    program = export_program(model)
    if "pt2" in formats:
        paths["pt2"] = out / f"{name}.pt2"
        torch.export.save(program, paths["pt2"])
    if "onnx" in formats:
        paths["onnx"] = out / f"{name}.onnx"
        onnx_program = torch.onnx.export(program, opset_version=ONNX_OPSET, dynamo=True, verbose=False,
                                         input_names=["waveform"], output_names=["logits", "embedding"])
        onnx_program.model.metadata_props["passt"] = json.dumps(info)
        onnx_program.save(paths["onnx"], external_data=False)
    paths["json"].write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return paths
