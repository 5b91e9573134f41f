"""Mel-spectrogram front end with SpecAugment, as the released PaSST models expect it.

Pipeline: pre-emphasis, STFT with a symmetric Hann window, power, Kaldi mel filter banks
(``torchaudio.compliance.kaldi``; fmin/fmax randomly shifted in training only),
``log(x + 1e-5)``, SpecAugment frequency and time masks (training only), then ``(x + 4.5) / 5``.

SpecAugment: with the torchaudio versions the original framework pinned (0.11/0.13),
``iid_masks=True`` on its ``[batch, n_mels, frames]`` input drew ONE frequency mask and ONE time
mask shared by the whole batch (per-example masks needed a 4-D input), and the released models
were trained that way; torchaudio 2.x draws one per example. The default here is the original's
effective behaviour, a mask per batch; ``iid_masks=True`` gives one per example. Masks are drawn
on the spectrogram's device (:func:`mask_band`), like the training mel banks.

Explicit draws: :meth:`AugmentMelSTFT.draw_augment` draws the band shift and both masks of each
example (:data:`MEL_DRAW_FIELDS`), and ``forward(x, augment=draws)`` applies exactly those, per
example: what consistent teaching records with a teacher's logits and replays for the student.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchaudio.compliance.kaldi import get_mel_banks

_logger = logging.getLogger(__name__)


#: the columns of :meth:`AugmentMelSTFT.draw_augment`: band shifts (Hz) and the masks' first bin/frame and width
MEL_DRAW_FIELDS = ("fmin_shift", "fmax_shift", "freq_start", "freq_width", "time_start", "time_width")


def _mel_scale(freq: torch.Tensor) -> torch.Tensor:
    """Hz to Kaldi's mel scale."""
    return 1127.0 * (1.0 + freq / 700.0).log()


def mask_band(mel: torch.Tensor, widest: int, dim: int, per_example: bool) -> torch.Tensor:
    """SpecAugment: zero a band of ``mel`` ``[batch, n_mels, frames]`` along ``dim`` (1 or 2).

    The distribution of torchaudio's ``mask_along_axis``: width ``floor(u * widest)``, start
    ``floor(u' * (size - u * widest))`` for uniform ``u, u'``; one band for the whole batch, or
    one per example. Drawn on ``mel``'s device: no host values, no host round trip.
    """
    if widest < 1:
        return mel
    draws = (mel.shape[0] if per_example else 1, 1)
    width = torch.rand(draws, device=mel.device) * widest
    start = torch.rand(draws, device=mel.device) * (mel.shape[dim] - width)
    start, end = start.long(), start.long() + width.long()
    position = torch.arange(mel.shape[dim], device=mel.device)
    band = (position >= start) & (position < end)  # [batch or 1, size]
    return mel.masked_fill(band.unsqueeze(2 if dim == 1 else 1), 0.0)


def band_draws(n: int, size: int, widest: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, width)`` of ``n`` SpecAugment bands, long ``[n]`` on the CPU, drawn as :func:`mask_band` draws them."""
    if widest < 1:
        return torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    width = torch.rand(n, generator=generator) * widest
    start = torch.rand(n, generator=generator) * (size - width)
    return start.long(), width.long()


def mask_bands_at(mel: torch.Tensor, start: torch.Tensor, width: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero the band ``[start_i, start_i + width_i)`` of each example along ``dim`` (1 or 2) of ``[batch, n_mels, frames]``."""
    position = torch.arange(mel.shape[dim], device=mel.device)
    start = start.reshape(-1, 1)
    band = (position >= start) & (position < start + width.reshape(-1, 1))
    return mel.masked_fill(band.unsqueeze(2 if dim == 1 else 1), 0.0)


class AugmentMelSTFT(nn.Module):
    """Waveforms ``[batch, samples]`` to normalised log-mel spectrograms ``[batch, n_mels, frames]``.

    ``htk`` and ``norm`` are accepted for configuration compatibility with the original framework;
    like there, the Kaldi mel banks are used regardless. ``fmin_aug_range=10, fmax_aug_range=2000``
    are the values every original experiment and ``hear21passt`` pass (the original class's own
    defaults, 1 and 1000, were never used for a released model). ``iid_masks``: one SpecAugment
    mask per example instead of one per batch (module docstring).
    """

    def __init__(self, n_mels: int = 128, sr: int = 32000, win_length: int = 800, hopsize: int = 320,
                 n_fft: int = 1024, freqm: int = 48, timem: int = 192, htk: bool = False, fmin: float = 0.0,
                 fmax: float | None = None, norm: int = 1, fmin_aug_range: int = 10,
                 fmax_aug_range: int = 2000, iid_masks: bool = False) -> None:
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError(f"fmin_aug_range={fmin_aug_range} and fmax_aug_range={fmax_aug_range} must "
                             f"be >= 1 (1 means no augmentation)")
        if fmax is None:
            fmax = sr // 2 - fmax_aug_range // 2
            _logger.info("fmax is None: using %s Hz", fmax)
        self.n_mels, self.sr, self.win_length, self.hopsize, self.n_fft = n_mels, sr, win_length, hopsize, n_fft
        self.htk, self.norm = htk, norm
        self.fmin, self.fmax = fmin, fmax
        self.fmin_aug_range, self.fmax_aug_range = fmin_aug_range, fmax_aug_range
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        # eval-mode banks never change: computed once instead of on every batch
        self.register_buffer("eval_mel_basis", self._mel_basis(fmin, fmax), persistent=False)
        # training banks are rebuilt per batch on the device from these (see random_mel_basis)
        top_fmin, top_fmax = fmin + fmin_aug_range - 1, fmax + fmax_aug_range // 2
        if not (0 <= fmin and top_fmax <= sr / 2 and top_fmin < top_fmax - fmax_aug_range + 1):
            raise ValueError(f"The training band must stay within 0..{sr / 2:g} Hz with fmin below fmax: fmin={fmin} "
                             f"(up to {top_fmin}) and fmax={fmax} ({top_fmax - fmax_aug_range + 1}..{top_fmax})")
        self.register_buffer("fft_bin_mels", _mel_scale(sr / n_fft * torch.arange(n_fft // 2.0)), persistent=False)
        self.freqm, self.timem, self.iid_masks = freqm, timem, iid_masks

    def _mel_basis(self, fmin: float, fmax: float) -> torch.Tensor:
        banks, _ = get_mel_banks(self.n_mels, self.n_fft, float(self.sr), fmin, fmax,
                                 vtln_low=100.0, vtln_high=-500.0, vtln_warp_factor=1.0)
        return F.pad(banks, (0, 1))  # Kaldi banks skip the Nyquist bin: [n_mels, n_fft // 2 + 1]

    def mel_basis(self) -> torch.Tensor:
        """Mel banks for this call: fixed in eval, with randomly shifted fmin/fmax in training."""
        if not self.training:
            return self.eval_mel_basis
        return self.random_mel_basis(*self.random_band())

    def _band_dtype(self) -> torch.dtype:
        return torch.float32 if self.fft_bin_mels.device.type == "mps" else torch.float64  # MPS has no float64

    def random_band(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training ``(fmin, fmax)``: ``fmin + randint(fmin_aug_range)`` and
        ``fmax + fmax_aug_range // 2 - randint(fmax_aug_range)`` Hz, drawn on the device (0-dim tensors)."""
        device, dtype = self.fft_bin_mels.device, self._band_dtype()
        fmin = self.fmin + torch.randint(self.fmin_aug_range, (), device=device, dtype=dtype)
        fmax = self.fmax + self.fmax_aug_range // 2 - torch.randint(self.fmax_aug_range, (), device=device, dtype=dtype)
        return fmin, fmax

    def random_mel_basis(self, fmin: torch.Tensor, fmax: torch.Tensor) -> torch.Tensor:
        """Kaldi's mel banks (``get_mel_banks`` without warping) for a band given as device tensors:
        0-dim ``fmin``/``fmax`` give ``[n_mels, n_fft // 2 + 1]``, ``[batch]`` ones a bank per example.

        Made where the spectrogram is, with no host round trip: ``get_mel_banks`` takes Python
        numbers and builds its banks on the CPU. The band edges are computed in double precision
        and rounded to float32 as Kaldi's are, so the banks are the same as its (``tests/test_preprocess.py``).
        """
        mel_low, mel_high = _mel_scale(fmin), _mel_scale(fmax)
        shape = (*mel_low.shape, 1, 1)
        delta = ((mel_high - mel_low) / (self.n_mels + 1)).float().reshape(shape)
        steps = torch.arange(self.n_mels + 2, device=delta.device, dtype=torch.float32).unsqueeze(1)
        edges = mel_low.float().reshape(shape) + steps * delta  # left, centre and right edges of the triangles
        left, center, right = edges[..., :-2, :], edges[..., 1:-1, :], edges[..., 2:, :]
        rising = (self.fft_bin_mels - left) / (center - left)
        falling = (right - self.fft_bin_mels) / (right - center)
        banks = torch.minimum(rising, falling).clamp_min(0.0)
        return F.pad(banks, (0, 1))  # as _mel_basis: no weight on the Nyquist bin

    def draw_augment(self, n: int, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmentation of ``n`` examples of ``samples`` samples, drawn on the CPU: long ``[n, 6]``
        (:data:`MEL_DRAW_FIELDS`), with the distributions of training (band shifts as :meth:`random_band`,
        masks as :func:`mask_band`), one per example; ``forward(x, augment=...)`` applies them."""
        fmin_shift = torch.randint(self.fmin_aug_range, (n,), generator=generator)
        fmax_shift = torch.randint(self.fmax_aug_range, (n,), generator=generator)
        freq_start, freq_width = band_draws(n, self.n_mels, self.freqm, generator)
        time_start, time_width = band_draws(n, self.frames(samples), self.timem, generator)
        return torch.stack([fmin_shift, fmax_shift, freq_start, freq_width, time_start, time_width], dim=1)

    def mel_basis_at(self, augment: torch.Tensor) -> torch.Tensor:
        """The banks ``[batch, n_mels, n_fft // 2 + 1]`` of the band shifts in ``augment`` (:meth:`draw_augment`)."""
        dtype = self._band_dtype()
        fmin = self.fmin + augment[:, 0].to(dtype)
        fmax = self.fmax + self.fmax_aug_range // 2 - augment[:, 1].to(dtype)
        return self.random_mel_basis(fmin, fmax)

    def forward(self, x: torch.Tensor, augment: torch.Tensor | None = None) -> torch.Tensor:
        """Spectrograms of ``x``; ``augment`` (long ``[batch, 6]``, :meth:`draw_augment`): exactly these
        band shifts and masks, one per example, in either mode (else: random ones in training only)."""
        if x.dim() != 2:
            raise ValueError(f"AugmentMelSTFT expects waveforms of shape [batch, samples]; got {tuple(x.shape)}")
        # the front end always runs in fp32: log-mel of half-precision power spectra loses too much
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.conv1d(x.float().unsqueeze(1), self.preemphasis).squeeze(1)
            stft = torch.stft(x, self.n_fft, hop_length=self.hopsize, win_length=self.win_length,
                              window=self.window, center=True, normalized=False, return_complex=True)
            power = torch.view_as_real(stft).pow(2).sum(-1)
            mel = torch.matmul(self.mel_basis() if augment is None else self.mel_basis_at(augment), power)
            mel = (mel + 1e-5).log()
        if augment is not None:
            mel = mask_bands_at(mel, augment[:, 2], augment[:, 3], dim=1)
            mel = mask_bands_at(mel, augment[:, 4], augment[:, 5], dim=2)
        elif self.training:
            mel = mask_band(mel, self.freqm, dim=1, per_example=self.iid_masks)
            mel = mask_band(mel, self.timem, dim=2, per_example=self.iid_masks)
        return (mel + 4.5) / 5.0

    def frames(self, samples: int) -> int:
        """Number of spectrogram frames for a waveform of ``samples`` samples."""
        return (samples - 1) // self.hopsize + 1  # pre-emphasis removes one sample; centred STFT

    def extra_repr(self) -> str:
        return (f"n_mels={self.n_mels}, sr={self.sr}, win_length={self.win_length}, hopsize={self.hopsize}, "
                f"n_fft={self.n_fft}, fmin={self.fmin}, fmax={self.fmax}, freqm={self.freqm}, timem={self.timem}, "
                f"iid_masks={self.iid_masks}")
