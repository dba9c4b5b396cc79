"""Voxelization invariants, checked against np.unique and a loop reference."""

import numpy as np
import pytest

from pointseg.data.voxelize import (
    fragments,
    grid_coordinates,
    pack_keys,
    voxelize,
    voxelize_points,
)


def room_cloud(n: int, seed: int = 0) -> np.ndarray:
    """Points on the walls / floor / ceiling of a 3 x 2 x 1.5 m box, plus a few inside."""
    rng = np.random.default_rng(seed)
    size = np.array([3.0, 2.0, 1.5])
    c = rng.random((n, 3)) * size
    axis = rng.integers(0, 3, n)
    on_wall = rng.random(n) < 0.9
    side = np.where(rng.random(n) < 0.5, 0.0, size[axis])
    c[on_wall, axis[on_wall]] = side[on_wall]
    return (c + np.array([-1.3, 4.2, 0.1])).astype(np.float32)


def test_grid_coordinates_formula():
    coord = room_cloud(2000)
    grid = grid_coordinates(coord, 0.05)
    expected = np.floor((coord - coord.min(0)) / np.float32(0.05)).astype(np.int32)
    assert grid.dtype == np.int32 and grid.flags.c_contiguous
    np.testing.assert_array_equal(grid, expected)
    assert grid.min() == 0


@pytest.mark.parametrize("mode", ["train", "test"])
def test_voxels_match_np_unique_and_representatives_lie_in_their_voxel(mode):
    coord = room_cloud(5000)
    grid = grid_coordinates(coord, 0.05)
    res = voxelize(grid, mode, np.random.default_rng(1))
    reference = np.unique(grid, axis=0)
    rep_grid = grid[res.index]
    # unique voxels, the same set as np.unique, one representative in each
    assert len(np.unique(rep_grid, axis=0)) == res.num_voxels == len(reference)
    np.testing.assert_array_equal(np.unique(rep_grid, axis=0), reference)
    assert res.count.sum() == len(coord)
    for r in range(0, res.num_voxels, 37):  # voxel r owns exactly the points of its cell
        members = res.order[res.start[r] : res.start[r] + res.count[r]]
        assert res.index[r] in members
        expected = np.flatnonzero((grid == rep_grid[r]).all(1))
        np.testing.assert_array_equal(members, expected)


def test_test_mode_inverse_maps_every_point_to_its_voxel():
    coord = room_cloud(5000)
    grid = grid_coordinates(coord, 0.05)
    res = voxelize(grid, "test")
    assert res.inverse.dtype == np.int64 and res.inverse.shape == (len(coord),)
    np.testing.assert_array_equal(grid[res.index][res.inverse], grid)
    # test-mode representative is the lowest point index of its voxel
    first = np.full(res.num_voxels, len(coord))
    np.minimum.at(first, res.inverse, np.arange(len(coord)))
    np.testing.assert_array_equal(res.index, first)


def test_train_representative_varies_with_seed_and_is_reproducible():
    grid = grid_coordinates(room_cloud(5000), 0.1)
    res = voxelize(grid, "train", np.random.default_rng(0))
    a = res.index
    b = voxelize(grid, "train", np.random.default_rng(0)).index
    c = voxelize(grid, "train", np.random.default_rng(1)).index
    np.testing.assert_array_equal(a, b)
    shared = res.count >= 3  # two independent uniform picks differ with probability >= 2/3
    assert shared.sum() > 100
    assert np.mean(a[shared] != c[shared]) > 0.5
    assert voxelize(grid, "train", np.random.default_rng(0)).inverse is None


def test_train_representative_is_uniform_within_a_voxel():
    grid = np.zeros((4, 3), dtype=np.int32)  # one voxel of four points
    picks = [voxelize(grid, "train", np.random.default_rng(s)).index[0] for s in range(400)]
    counts = np.bincount(picks, minlength=4)
    assert counts.min() > 60  # expected 100 each


def test_fragments_cover_every_point_once_with_unique_voxels():
    coord = room_cloud(3000)
    grid = grid_coordinates(coord, 0.1)
    res = voxelize(grid, "test")
    frags = fragments(grid)
    assert len(frags) == res.count.max()
    np.testing.assert_array_equal(frags[0], res.index)
    for f in frags:  # one point per voxel, rows aligned with the voxelize rows
        np.testing.assert_array_equal(res.inverse[f], np.arange(res.num_voxels))
    covered = np.concatenate(frags)
    assert set(covered.tolist()) == set(range(len(coord)))
    # j-th fragment takes the (j mod count)-th point: each point appears ceil(K / count) or
    # floor(K / count) times, i.e. at least once
    assert np.bincount(covered, minlength=len(coord)).min() >= 1


def test_voxelize_points_equals_grid_path():
    coord = room_cloud(4000, seed=3)
    grid = grid_coordinates(coord, 0.02)
    for mode in ("train", "test"):
        res, vgrid = voxelize_points(coord, 0.02, mode, np.random.default_rng(5))
        ref = voxelize(grid, mode, np.random.default_rng(5))
        np.testing.assert_array_equal(res.index, ref.index)
        np.testing.assert_array_equal(vgrid, grid[res.index])
        assert vgrid.dtype == np.int32


def test_key_packing_is_tight_and_refuses_overflow():
    grid = np.array([[0, 0, 0], [4, 2, 1]], dtype=np.int32)
    key, bits = pack_keys([grid[:, 0], grid[:, 1], grid[:, 2]], [5, 3, 2])
    assert bits == 1
    assert key.tolist() == [0, ((4 * 3 + 2) * 2 + 1) << 1 | 1]
    # 2**21 cells per axis -> 63 voxel bits plus 1 index bit: must refuse, not wrap around
    big = np.array([[0, 0, 0], [2**21 - 1, 2**21 - 1, 2**21 - 1]], dtype=np.int32)
    with pytest.raises(ValueError, match="key bits"):
        voxelize(big, "test")
    # the largest grid that fits still gives exact, non-negative keys
    fits = np.array([[0, 0, 0], [2**20 - 1, 2**20 - 1, 2**21 - 1]], dtype=np.int32)
    res = voxelize(fits, "test")
    assert res.num_voxels == 2 and res.inverse.tolist() == [0, 1]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=">= 0"):
        voxelize(np.array([[0, -1, 0]]), "test")
    with pytest.raises(ValueError, match="rng"):
        voxelize(np.zeros((2, 3), np.int32), "train")
    with pytest.raises(ValueError, match="not finite"):
        grid_coordinates(np.array([[0, 0, np.nan]], np.float32), 0.02)
    with pytest.raises(ValueError, match="int32 grid"):
        grid_coordinates(np.array([[0, 0, 0], [1e8, 0, 0]]), 0.02)
