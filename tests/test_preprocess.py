"""The mel front end: shape, values on known signals, augmentation in training only, bad input."""

import math

import pytest
import torch
from torchaudio.compliance.kaldi import get_mel_banks

from models.preprocess import AugmentMelSTFT


def test_default_configuration_matches_original_defaults():
    mel = AugmentMelSTFT()
    assert (mel.n_mels, mel.sr, mel.win_length, mel.hopsize, mel.n_fft) == (128, 32000, 800, 320, 1024)
    assert (mel.fmin_aug_range, mel.fmax_aug_range) == (10, 2000)
    assert mel.fmax == 32000 // 2 - 1000  # fmax=None leaves room for the fmax augmentation
    assert torch.equal(mel.window, torch.hann_window(800, periodic=False))


def test_ten_second_clip_gives_1000_frames():
    mel = AugmentMelSTFT().eval()
    out = mel(torch.zeros(2, 320000))
    assert out.shape == (2, 128, 1000) == (2, 128, mel.frames(320000))


def test_silence_maps_to_log_floor():
    out = AugmentMelSTFT().eval()(torch.zeros(1, 32000))
    torch.testing.assert_close(out, torch.full_like(out, (math.log(1e-5) + 4.5) / 5))


def test_tone_peaks_in_the_matching_mel_band():
    sr, freq = 32000, 2000.0
    t = torch.arange(sr) / sr
    mel = AugmentMelSTFT().eval()
    out = mel(torch.sin(2 * math.pi * freq * t)[None])
    _, centers = get_mel_banks(128, 1024, float(sr), 0.0, float(mel.fmax), 100.0, -500.0, 1.0)
    peak = out[0, :, 10:-10].mean(-1).argmax()
    assert abs(centers[peak].item() - freq) < 50  # band centres are in Hz


def test_eval_is_deterministic_and_training_augments():
    mel = AugmentMelSTFT(freqm=0, timem=0)
    wave = torch.randn(1, 16000)
    mel.eval()
    torch.testing.assert_close(mel(wave), mel(wave))
    mel.train()
    torch.manual_seed(0)
    assert not torch.allclose(mel(wave), mel(wave))  # fmin/fmax shifted per call


def _masked_rows_and_columns(out: torch.Tensor) -> tuple[list, list]:
    """Per example: which mel rows and which frames are masked (masked cells hold 0 before normalising)."""
    masked = out == (0 + 4.5) / 5
    return [m.all(dim=1).nonzero().flatten().tolist() for m in masked], [m.all(dim=0).nonzero().flatten().tolist()
                                                                        for m in masked]


def test_specaugment_draws_one_mask_per_batch_as_the_original():
    mel = AugmentMelSTFT(freqm=48, timem=40, fmin_aug_range=1, fmax_aug_range=1).train()
    wave = torch.randn(8, 32000)  # 8 different examples
    torch.manual_seed(0)
    widths = []
    for _ in range(30):
        rows, cols = _masked_rows_and_columns(mel(wave))
        assert all(r == rows[0] for r in rows) and all(c == cols[0] for c in cols)  # shared by the batch
        assert rows[0] == list(range(rows[0][0], rows[0][0] + len(rows[0]))) if rows[0] else True  # one band
        widths.append(len(rows[0]))
    assert max(widths) < 48 and len(set(widths)) > 5  # width uniform below freqm


def test_iid_masks_draws_one_mask_per_example():
    mel = AugmentMelSTFT(freqm=48, timem=40, fmin_aug_range=1, fmax_aug_range=1, iid_masks=True).train()
    torch.manual_seed(0)
    rows, cols = _masked_rows_and_columns(mel(torch.randn(8, 32000)))
    assert len({repr(r) for r in rows}) > 1 and len({repr(c) for c in cols}) > 1


def test_front_end_stays_fp32_under_autocast():
    mel = AugmentMelSTFT().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mel(torch.randn(1, 16000))
    assert out.dtype == torch.float32


def test_wrong_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        AugmentMelSTFT()(torch.zeros(2, 1, 16000))


def test_aug_ranges_must_be_positive():
    with pytest.raises(ValueError, match="fmin_aug_range"):
        AugmentMelSTFT(fmin_aug_range=0)


@pytest.mark.parametrize("fmin, fmax", [(0, 14001), (3, 15000), (9, 16000), (5, 15517)])
def test_training_banks_are_kaldis_banks_made_on_the_device(fmin, fmax):
    mel = AugmentMelSTFT()
    kaldi, _ = get_mel_banks(128, 1024, 32000.0, float(fmin), float(fmax), 100.0, -500.0, 1.0)
    band = torch.tensor(fmin, dtype=torch.float64), torch.tensor(fmax, dtype=torch.float64)
    assert torch.equal(mel.random_mel_basis(*band), torch.nn.functional.pad(kaldi, (0, 1)))


def test_training_band_keeps_the_original_distribution():
    # fmin + randint(fmin_aug_range), fmax + fmax_aug_range // 2 - randint(fmax_aug_range)
    mel = AugmentMelSTFT(fmin=20.0, fmax=14000, fmin_aug_range=4, fmax_aug_range=10)
    torch.manual_seed(0)
    draws = [mel.random_band() for _ in range(400)]
    fmins = torch.stack([d[0] for d in draws])
    fmaxs = torch.stack([d[1] for d in draws])
    assert set(fmins.tolist()) == {20.0, 21.0, 22.0, 23.0}
    assert set(fmaxs.tolist()) == set(float(v) for v in range(14000 + 5 - 9, 14000 + 5 + 1))


def test_a_training_band_outside_nyquist_is_refused_at_construction():
    with pytest.raises(ValueError, match="training band"):
        AugmentMelSTFT(fmax=15500, fmax_aug_range=2000)  # up to 16500 Hz at 32 kHz
