"""Batch mixup: weights, permutation, and that inputs and targets are mixed alike."""

import pytest
import torch

from helpers.training.mixup import draw_mixup, mix


def test_lambdas_are_folded_to_the_upper_half():
    torch.manual_seed(0)
    perm, lam = draw_mixup(1000, 0.3)
    assert lam.shape == (1000,) and lam.dtype == torch.float32
    assert torch.all(lam >= 0.5) and torch.all(lam <= 1.0)
    assert sorted(perm.tolist()) == list(range(1000))  # a permutation
    # Beta(0.3, 0.3) is U-shaped: most folded weights are close to 1
    assert (lam > 0.9).float().mean() > 0.4


def test_seeded_draws_are_reproducible():
    torch.manual_seed(3)
    a = draw_mixup(16, 0.3)
    torch.manual_seed(3)
    b = draw_mixup(16, 0.3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.all(a[1] >= 0.5)


def test_mix_combines_each_example_with_its_partner():
    x = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 1, 2, 4)
    y = torch.eye(3)
    perm = torch.tensor([2, 0, 1])
    lam = torch.tensor([1.0, 0.75, 0.5])
    xm, ym = mix(x, perm, lam), mix(y, perm, lam)
    assert torch.equal(xm[0], x[0])
    assert torch.allclose(xm[1], 0.75 * x[1] + 0.25 * x[0])
    assert torch.allclose(xm[2], 0.5 * x[2] + 0.5 * x[1])
    assert torch.allclose(ym[1], torch.tensor([0.25, 0.75, 0.0]))
    assert torch.allclose(ym.sum(dim=1), torch.ones(3))  # soft targets stay distributions


def test_invalid_alpha_is_rejected():
    with pytest.raises(ValueError, match="nomixup"):
        draw_mixup(4, 0.0)
