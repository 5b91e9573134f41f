"""Waveform augmentation: the original recipe's draws, checked statistically (gain, roll, wavmix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import Dataset

from helpers.data.augment import GainAugmentDataset, MixupDataset, RollDataset, concat_datasets, folded_beta


class Clips(Dataset):
    """Item i: a ramp scaled by (i + 1) plus a DC offset of i, target one-hot i."""

    n_classes = 8

    def __len__(self):
        return 8

    def __getitem__(self, i):
        wave = (np.linspace(-0.5, 0.5, 400, dtype=np.float32) * (i + 1) + i)[None, :]
        return wave, f"clip{i}", np.eye(8, dtype=np.float32)[i]


def test_gain_is_a_whole_number_of_decibels_from_minus_7_to_6():
    torch.manual_seed(0)
    ds, base = GainAugmentDataset(Clips(), gain_db=7), Clips()[2][0]
    gains = [20 * np.log10(ds[2][0][0, -1] / base[0, -1]) for _ in range(1400)]
    whole = np.round(gains)
    np.testing.assert_allclose(gains, whole, atol=1e-4)
    counts = {g: int(n) for g, n in zip(*np.unique(whole, return_counts=True), strict=True)}
    assert sorted(counts) == list(range(-7, 7))  # -7 ... 6, as randint(14) - 7
    assert stats.chisquare(list(counts.values())).pvalue > 0.01  # uniform over the 14 values
    np.testing.assert_array_equal(GainAugmentDataset(Clips(), 0)[1][0], Clips()[1][0])
    assert ds[1][1] == "clip1" and ds.n_classes == 8  # attributes pass through wrappers
    with pytest.raises(ValueError, match="whole number"):
        GainAugmentDataset(Clips(), 6.5)


def _shift(base: np.ndarray, rolled: np.ndarray) -> int:
    return next(s for s in range(-199, 200) if np.array_equal(np.roll(base, s, axis=-1), rolled))


def test_roll_shifts_by_a_uniform_whole_number_of_samples_within_50():
    torch.manual_seed(0)
    ds, base = RollDataset(Clips()), Clips()[3][0]
    shifts = [_shift(base, ds[3][0]) for _ in range(2000)]
    assert min(shifts) == -50 and max(shifts) == 50  # both ends included
    assert stats.chisquare(np.bincount(np.asarray(shifts) + 50, minlength=101)).pvalue > 0.01
    fixed = RollDataset.from_roll_conf(Clips(), {"axis": 1, "shift": 7, "shift_range": 50})
    assert _shift(base, fixed[3][0]) == 7
    wide = RollDataset.from_roll_conf(Clips(), {"shift_range": 10000})
    assert wide.shift_range == 10000 and wide.shift is None
    with pytest.raises(ValueError, match="time axis"):
        RollDataset.from_roll_conf(Clips(), {"axis": 0})


def folded_beta_cdf(x, beta=2.0):
    """CDF of max(L, 1 - L) for L ~ Beta(beta, beta): 2 F(x) - 1 on [0.5, 1]."""
    return np.clip(2 * stats.beta.cdf(x, beta, beta) - 1, 0, 1)


def test_wavmix_weights_follow_beta_2_2_folded_and_mix_waves_and_targets_alike():
    torch.manual_seed(0)
    ds, clips = MixupDataset(Clips()), Clips()
    lams, partners, mixed = [], [], 0
    for i in range(4000):
        index = i % 8
        wave, name, target = ds[index]
        assert name == f"clip{index}"
        if target[index] == 1.0:  # not mixed (unchanged), or mixed with itself (only re-centred)
            w = clips[index][0]
            assert np.array_equal(wave, w) or np.allclose(wave, w - w.mean(), atol=1e-5)
            continue
        mixed += 1
        lam = float(target[index])
        other = int(np.argmax(np.where(np.arange(8) == index, -1, target)))
        assert target.sum() == pytest.approx(1.0) and target[other] == pytest.approx(1 - lam)
        # both clips' means removed, the mix re-centred: DC offsets vanish
        w1, w2 = clips[index][0], clips[other][0]
        expected = lam * (w1 - w1.mean()) + (1 - lam) * (w2 - w2.mean())
        np.testing.assert_allclose(wave, expected - expected.mean(), atol=1e-5)
        assert abs(wave.mean()) < 1e-5
        lams.append(lam)
        partners.append(other)
    assert 0.42 < mixed / 4000 < 0.46  # rate 0.5, minus the 1/8 drawn partners equal to the clip itself
    assert min(lams) >= 0.5
    assert stats.kstest(lams, folded_beta_cdf).pvalue > 0.01
    assert stats.kstest(lams, lambda x: folded_beta_cdf(x, 0.3)).pvalue < 1e-6  # not the batch mixup's 0.3
    assert set(partners) == set(range(8))
    assert all(MixupDataset(clips, rate=0.0)[2][2][2] == 1.0 for _ in range(10))


def test_folded_beta_is_the_larger_part_of_a_beta_draw():
    torch.manual_seed(1)
    lam = folded_beta(2.0, 5000).numpy()
    assert lam.dtype == np.float32 and lam.min() >= 0.5
    assert stats.kstest(lam, folded_beta_cdf).pvalue > 0.01
    with pytest.raises(ValueError, match="> 0"):
        folded_beta(0.0, 3)


def test_concat_checks_n_classes():
    class Other(Clips):
        n_classes = 5

    assert len(concat_datasets([Clips(), Clips()])) == 16
    with pytest.raises(ValueError, match="different n_classes"):
        concat_datasets([Clips(), Other()])
