"""Tests of helpers/sampler.py: importance weights and the DDP sampler wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

from helpers.data.hdf5_dataset import open_read_only
from helpers.data.sampler import (
    DistributedSamplerWrapper,
    label_frequencies,
    make_weighted_sampler,
    sample_weights_from_hdf5,
    weights_from_packed_targets,
)


def naive_weights(dense: np.ndarray, offset: float) -> np.ndarray:
    """The formula written out directly: sum over a clip's labels of 1000 / (freq + offset)."""
    freq = dense.sum(axis=0)
    return np.array([sum(1000.0 / (freq[c] + offset) for c in np.flatnonzero(row)) for row in dense])


def test_weights_on_a_hand_made_example():
    dense = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    packed = np.packbits(dense, axis=-1)
    np.testing.assert_array_equal(label_frequencies(packed, 3), [3, 1, 1])
    weights = weights_from_packed_targets(packed, 3, offset=100)
    a, b = 1000 / 103, 1000 / 101
    np.testing.assert_allclose(weights, [a, a + b, b, a, 0.0])
    np.testing.assert_allclose(weights_from_packed_targets(packed, 3, offset=0), [1000 / 3, 1000 / 3 + 1000, 1000, 1000 / 3, 0])


def test_weights_match_the_formula_on_random_audioset_sized_labels():
    rng = np.random.default_rng(0)
    dense = rng.random((3000, 527)) < rng.random(527) * 0.05
    packed = np.packbits(dense, axis=-1)
    np.testing.assert_array_equal(label_frequencies(packed, 527), dense.sum(axis=0))
    np.testing.assert_allclose(weights_from_packed_targets(packed, 527, 100), naive_weights(dense, 100))


def test_max_over_labels_instead_of_the_sum():
    dense = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    weights = weights_from_packed_targets(np.packbits(dense, axis=-1), 3, offset=100, weight_sum=False)
    np.testing.assert_allclose(weights, [1000 / 103, 1000 / 101, 1000 / 101, 1000 / 103, 0.0])
    rng = np.random.default_rng(1)
    dense = rng.random((500, 527)) < 0.02
    freq = dense.sum(axis=0)
    expected = np.array([max([1000 / (freq[c] + 100) for c in np.flatnonzero(row)], default=0.0) for row in dense])
    np.testing.assert_allclose(weights_from_packed_targets(np.packbits(dense, axis=-1), 527, 100, False), expected)


def test_an_epoch_draws_distinct_clips_by_default():
    weights = np.random.default_rng(2).random(300) * (np.arange(300) % 7 != 0)  # some zero weights
    sampler = make_weighted_sampler(weights, epoch_len=200)
    for _ in range(3):
        drawn = list(sampler)
        assert len(drawn) == 200 and len(set(drawn)) == 200  # no clip twice in one epoch
        assert all(weights[i] > 0 for i in drawn)
    ranks = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r, seed=5)) for r in range(2)]
    assert len(set(ranks[0]) | set(ranks[1])) == 200  # the ranks share one epoch of distinct clips


def test_wrong_packed_width_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        weights_from_packed_targets(np.zeros((4, 10), dtype=np.uint8), 527)


def test_weights_from_hdf5_count_frequencies_over_all_files(mini_audioset):
    paths = [mini_audioset["balanced_train_hdf5"], mini_audioset["unbalanced_train_hdf5"]]
    dense = []
    for path in paths:
        with open_read_only(path) as hf:
            dense.append(np.unpackbits(hf["target"][()], axis=-1, count=527).astype(bool))
    dense = np.concatenate(dense)
    weights = sample_weights_from_hdf5(paths, n_classes=527, offset=100)
    assert weights.shape == (32,)
    np.testing.assert_allclose(weights, naive_weights(dense, 100))
    with pytest.raises(ValueError, match="n_classes"):
        sample_weights_from_hdf5(paths, n_classes=100)


def test_weights_from_hdf5_name_the_command_creating_a_missing_file(mini_audioset, tmp_path):
    missing = tmp_path / "unbalanced.hdf"
    with pytest.raises(FileNotFoundError, match="make-it --out .*unbalanced.hdf"):
        sample_weights_from_hdf5(
            [mini_audioset["balanced_train_hdf5"], missing], prepare_hint=lambda path: f"make-it --out {path}"
        )


def test_weighted_sampler_draws_proportionally_and_never_zero_weight():
    weights = np.array([1.0, 0.0, 3.0, 6.0])
    sampler = make_weighted_sampler(weights, epoch_len=20000, replacement=True)
    sampler.generator = torch.Generator().manual_seed(0)
    drawn = np.bincount(list(sampler), minlength=4)
    assert len(sampler) == 20000 and drawn[1] == 0
    np.testing.assert_allclose(drawn / drawn.sum(), [0.1, 0.0, 0.3, 0.6], atol=0.02)
    with pytest.raises(ValueError, match="sampler_replace"):
        make_weighted_sampler(weights, epoch_len=4, replacement=False)


def rank_views(make_sampler, world, **kwargs):
    """Each rank builds its own wrapper (as separate processes would) and draws one epoch."""
    return [list(DistributedSamplerWrapper(make_sampler(), num_replicas=world, rank=r, **kwargs)) for r in range(world)]


def test_ddp_wrapper_gives_disjoint_shares_covering_the_draw():
    def make():
        return RandomSampler(range(12))  # a fresh, unseeded sampler on every rank

    views = rank_views(make, world=3, seed=7)
    assert [len(v) for v in views] == [4, 4, 4]
    assert sorted(sum(views, [])) == list(range(12))  # disjoint, and together all of it
    # Interleaving the shares gives back the single, shared draw.
    interleaved = [views[i % 3][i // 3] for i in range(12)]
    assert interleaved != list(range(12))  # really shuffled
    assert interleaved == rank_views(make, world=1, seed=7)[0]


def test_ddp_wrapper_pads_or_drops_uneven_lengths():
    views = rank_views(lambda: SequentialSampler(range(10)), world=4)
    assert [len(v) for v in views] == [3, 3, 3, 3]
    assert sorted(sum(views, [])) == sorted(list(range(10)) + [0, 1])  # wrapped around to pad
    dropped = rank_views(lambda: SequentialSampler(range(10)), world=4, drop_last=True)
    assert [len(v) for v in dropped] == [2, 2, 2, 2]
    assert sorted(sum(dropped, [])) == list(range(8))


def test_ddp_wrapper_with_weighted_sampler_and_epochs():
    weights = np.ones(50)

    def wrapper(rank):
        return DistributedSamplerWrapper(make_weighted_sampler(weights, epoch_len=40), num_replicas=2, rank=rank)

    ranks = [wrapper(0), wrapper(1)]
    for epoch in range(3):
        for w in ranks:
            w.set_epoch(epoch)
    epoch2 = [list(w) for w in ranks]
    assert [len(v) for v in epoch2] == [20, 20]
    for w in ranks:
        w.set_epoch(1)
    epoch1 = [list(w) for w in ranks]
    assert epoch1 != epoch2  # a new draw every epoch
    for w in ranks:
        w.set_epoch(1)
    assert [list(w) for w in ranks] == epoch1  # reproducible per epoch
    # Without set_epoch the epoch advances by itself, identically on every rank.
    auto = [wrapper(0), wrapper(1)]
    first = [list(w) for w in auto]
    second = [list(w) for w in auto]
    assert first != second and all(w.epoch == 2 for w in auto)


def test_ddp_wrapper_leaves_the_global_rng_alone():
    class GlobalRngSampler(Sampler[int]):
        def __iter__(self):
            return iter(torch.randperm(8).tolist())

        def __len__(self):
            return 8

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    views = rank_views(GlobalRngSampler, world=2, seed=5)
    assert sorted(sum(views, [])) == list(range(8))
    assert torch.equal(torch.rand(3), expected_next)


def test_rank_and_world_size_come_from_torch_distributed(monkeypatch):
    wrapper = DistributedSamplerWrapper(SequentialSampler(range(6)))
    assert (wrapper.rank, wrapper.num_replicas) == (0, 1)  # not initialised: one process
    # an initialised process group of 3, seen from rank 2 (looked up when iterating, not when built)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 2)
    assert (wrapper.rank, wrapper.num_replicas) == (2, 3)
    assert list(wrapper) == [2, 5]
    explicit = DistributedSamplerWrapper(SequentialSampler(range(6)), num_replicas=2, rank=0)
    assert list(explicit) == [0, 2, 4]  # explicit arguments win over the process group
    with pytest.raises(ValueError, match="rank 3"):
        list(DistributedSamplerWrapper(SequentialSampler(range(6)), num_replicas=2, rank=3))
