"""Chunked prediction: chunk plans tile the scan within the voxel budget, a model of bounded reach
predicts the chunked scan exactly as ``pointseg-test``'s path predicts the whole, a real backbone
agrees within a stated tolerance, and every point (duplicates too) gets its voxel's label."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointseg.data.transforms import build_transforms, default_test_transforms
from pointseg.evaluation.chunks import plan_chunks, predict_chunked, vote_weight
from pointseg.evaluation.inference import predict_scene
from pointseg.sparse import DownConv3d, SparseTensor, SubMConv3d, UpConv3d, cat

VOXEL = 0.1
K = 7


def room(n: int = 6000, seed: int = 0) -> dict:
    """Floor, two walls and a box of a 4 × 3 × 2.5 m room, with duplicated points."""
    rng = np.random.default_rng(seed)
    m = n // 4
    parts = [
        np.c_[rng.uniform(0, 4, m), rng.uniform(0, 3, m), np.zeros(m)],
        np.c_[rng.uniform(0, 4, m), np.zeros(m), rng.uniform(0, 2.5, m)],
        np.c_[np.zeros(m), rng.uniform(0, 3, m), rng.uniform(0, 2.5, m)],
        rng.uniform([1.5, 1, 0], [2.5, 2, 0.8], (n - 3 * m, 3)),
    ]
    coord = np.concatenate(parts).astype(np.float32)
    coord[-50:] = coord[:50]  # duplicate points
    color = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    return {"coord": coord, "color": color}


def pipeline():
    return build_transforms(default_test_transforms(VOXEL, ["color"]))


class LocalNet(torch.nn.Module):
    """A sparse U-Net of one level whose output at a voxel depends only on voxels within 4 of it
    (Chebyshev): 3×3×3 conv (reach 1), stride-2 down, 3×3×3 conv on the coarse grid, up, skip.
    Its stride-2 layer pairs voxels by grid parity: a chunk on another grid would change it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = SubMConv3d(3, 8, 3, backend="torch")
        self.down = DownConv3d(8, 8, backend="torch")
        self.b = SubMConv3d(8, 8, 3, backend="torch")
        self.up = UpConv3d(8, 8, backend="torch")
        self.head = torch.nn.Linear(16, K)
        self.sizes: list[int] = []

    def forward(self, batch: dict) -> dict:
        self.sizes.append(int(batch["feat"].shape[0]))
        x = SparseTensor(feats=batch["feat"], coords=batch["coords"])
        a = self.a(x)
        a = a.replace_feats(torch.relu(a.feats))
        coarse = self.b(self.down(a))
        up = self.up(coarse.replace_feats(torch.relu(coarse.feats)))
        return {"logits": 3 * self.head(cat(a, up).feats)}


REACH = 4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def test_plans_tile_the_scan_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    grid = np.unique(rng.integers(0, [60, 40, 20], (8000, 3)), axis=0)
    size = grid.max(0) + 1
    for max_voxels, overlap in ((len(grid), 5), (2000, 5), (1500, 3), (900, 0)):
        chunks = plan_chunks(grid, max_voxels, overlap)
        core_of = np.zeros(len(grid), int)
        for c in chunks:
            assert c.num_voxels <= max_voxels
            assert np.array_equal(c.context_lo, np.maximum(c.core_lo - overlap, 0))
            assert np.array_equal(c.context_hi, np.minimum(c.core_hi + overlap, size))
            inside = np.all((grid >= c.context_lo) & (grid < c.context_hi), axis=1)
            assert np.array_equal(np.sort(c.index), np.flatnonzero(inside))  # all of the context, nothing else
            in_core = np.all((grid[c.index] >= c.core_lo) & (grid[c.index] < c.core_hi), axis=1)
            core_of[c.index[in_core]] += 1
            assert np.all(c.weight[in_core] == 1)  # a core voxel has a full vote
        assert np.all(core_of == 1)  # the cores tile the scan
    assert len(plan_chunks(grid, len(grid), 5)) == 1
    with pytest.raises(ValueError, match="max-voxels 10 is too small"):
        plan_chunks(grid, 10, 5)


def test_vote_weight_by_depth_inside_the_faces_that_cut_the_scan() -> None:
    size = np.array([100, 100, 100])
    lo, hi = np.array([20, 0, 0]), np.array([40, 100, 100])  # cut at x=20 and x=40 only
    x = np.arange(20, 40)
    grid = np.c_[x, np.zeros_like(x), np.zeros_like(x)]  # y = z = 0: on the scan's own faces
    w = vote_weight(grid, lo, hi, size, overlap=6)
    depth = np.minimum(x - 20, 39 - x)
    half = math.ceil(6 / 2)
    expected = np.clip((np.minimum(depth, 6) - half + 1) / (6 - half + 1), 0, 1)
    np.testing.assert_allclose(w, expected)
    assert np.all(w[depth < half] == 0) and np.all(w[depth >= 6] == 1)
    assert np.all(vote_weight(grid, lo, hi, size, overlap=0) == 1)


def test_chunked_equals_whole_scan_for_a_model_of_bounded_reach() -> None:
    data = room()
    net = LocalNet().eval()
    # the oracle: pointseg-test's path on the whole scan, every point through its voxel
    whole = predict_scene([net], data, pipeline(), num_classes=K).argmax(1).numpy()
    net.sizes.clear()
    overlap = 2 * REACH  # weight is 0 within ceil(overlap / 2) = REACH of a cut
    result = predict_chunked([net], data, pipeline(), VOXEL, num_classes=K, max_voxels=900, overlap=overlap)
    assert result.num_chunks >= 4 and result.largest_chunk <= 900
    assert max(net.sizes) <= 900 and len(net.sizes) == result.num_chunks  # one forward per chunk, in budget
    assert result.peak_pending < result.num_voxels  # shared votes are released, not kept for the scan
    np.testing.assert_array_equal(result.label, whole)
    # with too little overlap for the model's reach, chunk borders show
    short = predict_chunked([net], data, pipeline(), VOXEL, num_classes=K, max_voxels=900, overlap=2)
    assert not np.array_equal(short.label, whole)


def test_one_chunk_is_pointseg_test_without_fragments(tiny_backbone) -> None:
    from engine_helpers import tiny_config

    from pointseg.models.segmentor import build_segmentor

    cfg = tiny_config("unused")
    torch.manual_seed(1)
    model = build_segmentor(cfg, train=False).eval()
    data = room(3000, seed=3)
    whole = predict_scene([model], data, pipeline(), num_classes=200).argmax(1).numpy()
    one = predict_chunked([model], data, pipeline(), VOXEL, num_classes=200, max_voxels=10**6, overlap=8)
    assert one.num_chunks == 1
    np.testing.assert_array_equal(one.label, whole)
    # the deep backbone sees beyond any overlap: chunked, it agrees away from borders, not exactly
    chunked = predict_chunked([model], data, pipeline(), VOXEL, num_classes=200, max_voxels=700, overlap=8)
    assert chunked.num_chunks > 1
    assert (chunked.label == whole).mean() >= 0.9


def test_every_point_gets_its_voxels_label() -> None:
    data = room()
    net = LocalNet().eval()
    result = predict_chunked([net], data, pipeline(), VOXEL, num_classes=K, max_voxels=900, overlap=8)
    assert result.label.shape == (len(data["coord"]),) and result.label.min() >= 0
    np.testing.assert_array_equal(result.label[-50:], result.label[:50])  # duplicates
    cells = np.floor((data["coord"] - data["coord"].min(0)) / np.float32(VOXEL)).astype(np.int64)
    _, voxel = np.unique(cells, axis=0, return_inverse=True)
    voxel = voxel.reshape(-1)
    first = np.zeros(voxel.max() + 1, int)
    first[voxel[::-1]] = np.arange(len(voxel))[::-1]  # the lowest point index of each voxel
    np.testing.assert_array_equal(result.label, result.label[first][voxel])
