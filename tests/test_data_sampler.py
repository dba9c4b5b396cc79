"""Repeat-factor sampling: factors worked by hand, exact per (seed, epoch), sharded like torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from pointseg.data.sampler import repeat_factor_items, repeat_factors, shard


def test_repeat_factors_by_hand():
    # 4 scenes; class 0 in all (f = 1), class 1 in one (f = 1/4), class 2 in two (f = 1/2).
    scenes = [np.array([0, 1]), np.array([0, 2]), np.array([0, 2]), np.array([0])]
    r = repeat_factors(scenes, threshold=0.5)
    # r_0 = max(1, sqrt(0.5 / 1)) = 1; r_1 = sqrt(0.5 / 0.25) = sqrt(2); r_2 = sqrt(0.5 / 0.5) = 1
    np.testing.assert_allclose(r, [math.sqrt(2), 1.0, 1.0, 1.0])
    assert repeat_factors([np.array([], np.int64)], 0.5).tolist() == [1.0]  # a scene with no class
    with pytest.raises(ValueError, match="threshold must be > 0"):
        repeat_factors(scenes, 0.0)


def test_items_are_stochastically_rounded_copies_fixed_by_seed_and_epoch():
    factors = np.array([1.0, 2.5, 1.25, 3.0])
    n = factors.size
    a = repeat_factor_items(factors, seed=3, epoch=7)
    assert np.array_equal(a, repeat_factor_items(factors, seed=3, epoch=7))  # exact across resume
    copies = np.bincount(a % n, minlength=n)
    assert copies[0] == 1 and copies[3] == 3 and copies[1] in (2, 3) and copies[2] in (1, 2)
    assert sorted((a // n)[a % n == 3].tolist()) == [0, 1, 2]  # each visit is its own item
    # Over many epochs each scene is visited r_i times on average.
    mean = np.mean([np.bincount(repeat_factor_items(factors, 0, e) % n, minlength=n) for e in range(4000)], axis=0)
    np.testing.assert_allclose(mean, factors, atol=0.03)


@pytest.mark.parametrize("size, world", [(10, 1), (10, 3), (9, 2)])
def test_shard_cuts_like_distributed_sampler(size, world):
    items = np.arange(size)[::-1].copy()
    for rank in range(world):
        ref = DistributedSampler(list(items), num_replicas=world, rank=rank, shuffle=False)
        assert shard(items, rank, world) == [int(items[i]) for i in ref]
