"""Prediction of a scan of any size: spatial chunks of the voxel grid, with overlap and voting.

The scan is voxelized once (test mode: the lowest-index point of each voxel represents it, and
every point takes its voxel's prediction, as ``pointseg-test --no-fragments`` does), so duplicate
points and dense scans cost nothing beyond their voxels. The occupied voxels are cut by recursive
halving (at the median voxel along the box's longest side) into box *cores* that tile the scan;
each chunk is predicted on its core grown by ``overlap`` voxels on every side (its *context*),
whose voxel count stays within ``max_voxels``: the memory bound of one forward pass.

Every chunk is voxelized on the scan's grid (``grid_origin``), so a voxel has the same grid
coordinates, and the network's strided layers the same cells, in a chunk as in the whole scan.
A voxel in several contexts gets the votes of all, each weighted by its depth ``d`` (in voxels)
inside that context, counting only the faces that cut the scan: weight 0 for ``d < h`` with
``h = ceil(overlap / 2)``, rising linearly to 1 at ``d = overlap``. Core voxels have ``d >=
overlap``, so every voxel has a full vote; and a model whose output at a voxel depends only on
voxels within ``h`` of it (Chebyshev distance) predicts the chunked scan exactly as the whole.
Deep networks see further, so their chunked predictions differ slightly near chunk borders.
TTA views turn each chunk about its own centre and voxelize it afresh, as ``pointseg-test``
turns a whole scene.

Votes are summed only for voxels in several contexts, and each sum is released as soon as the
last of its chunks has voted (chunks are visited depth first, so neighbours come close together):
no array of N × classes probabilities is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pointseg.data.voxelize import voxelize_points
from pointseg.evaluation.inference import Model, TTAView, predict_scene


@dataclass(frozen=True)
class Chunk:
    """One chunk: its core and context boxes on the grid (``[lo, hi)`` per axis), the voxels of its
    context (``index`` into the scan's voxels) and the weight of each one's vote."""

    core_lo: np.ndarray
    core_hi: np.ndarray
    context_lo: np.ndarray
    context_hi: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    @property
    def num_voxels(self) -> int:
        return int(self.index.shape[0])


def _inside(grid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.all((grid >= lo) & (grid < hi), axis=1)


def vote_weight(grid: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: np.ndarray, overlap: int) -> np.ndarray:
    """float32 weight of each voxel's vote in the context ``[lo, hi)``: its depth inside, over the
    faces that cut the scan (a face on the scan's own bounds hides nothing), ramped as the module
    docstring says."""
    if overlap == 0:
        return np.ones(len(grid), dtype=np.float32)
    far = np.iinfo(np.int64).max
    depth = np.full(len(grid), far, dtype=np.int64)
    for axis in range(3):
        if lo[axis] > 0:
            np.minimum(depth, grid[:, axis] - lo[axis], out=depth)
        if hi[axis] < size[axis]:
            np.minimum(depth, hi[axis] - 1 - grid[:, axis], out=depth)
    half = math.ceil(overlap / 2)
    ramp = (np.minimum(depth, overlap) - half + 1) / (overlap - half + 1)
    return np.clip(ramp, 0.0, 1.0).astype(np.float32)


def plan_chunks(grid: np.ndarray, max_voxels: int, overlap: int) -> list[Chunk]:
    """Chunks whose cores tile the occupied voxels ``grid`` (int (M, 3), all >= 0) and whose
    contexts (core + ``overlap`` voxels, within the scan) hold at most ``max_voxels`` voxels each.

    Raises ValueError when a single voxel's context already holds more: ``max_voxels`` is too
    small for that overlap.
    """
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be positive, got {max_voxels}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0 voxels, got {overlap}")
    grid = np.asarray(grid, dtype=np.int64)
    size = grid.max(axis=0) + 1
    chunks: list[Chunk] = []
    # (core_lo, core_hi, candidate voxels: a superset of the core's context)
    stack = [(np.zeros(3, np.int64), size.copy(), np.arange(len(grid)))]
    while stack:
        lo, hi, candidates = stack.pop()
        cand_grid = grid[candidates]
        in_core = _inside(cand_grid, lo, hi)
        if not in_core.any():
            continue
        core = cand_grid[in_core]
        lo, hi = core.min(axis=0), core.max(axis=0) + 1  # tight: empty space needs no context
        ctx_lo, ctx_hi = np.maximum(lo - overlap, 0), np.minimum(hi + overlap, size)
        in_ctx = _inside(cand_grid, ctx_lo, ctx_hi)
        count = int(in_ctx.sum())
        if count <= max_voxels:
            index = candidates[in_ctx]
            weight = vote_weight(grid[index], ctx_lo, ctx_hi, size, overlap)
            chunks.append(Chunk(lo, hi, ctx_lo, ctx_hi, index, weight))
            continue
        extent = hi - lo
        if extent.max() <= 1:
            raise ValueError(
                f"max-voxels {max_voxels} is too small: one voxel with {overlap} voxels of overlap around it "
                f"already holds {count} voxels; raise --max-voxels or lower the overlap"
            )
        axis = int(np.argmax(extent))
        cut = int(np.median(core[:, axis]))
        cut = min(max(cut, int(lo[axis]) + 1), int(hi[axis]) - 1)
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[axis], right_lo[axis] = cut, cut
        sub = candidates[in_ctx]
        stack.append((right_lo, hi, sub))  # popped after the left half: depth first, left to right
        stack.append((lo, left_hi, sub))
    return chunks


class _Votes:
    """Weighted probability sums of the voxels that several chunks vote for, in slots that are
    reused once a voxel's last chunk has voted; a voxel with one vote is decided at once."""

    def __init__(self, cover: np.ndarray, num_classes: int) -> None:
        self.remaining = cover.astype(np.int32)
        self.label = np.full(len(cover), -1, dtype=np.int64)
        self.slot = np.full(len(cover), -1, dtype=np.int64)
        self.sums = np.zeros((0, num_classes), dtype=np.float32)
        self.free = np.zeros(0, dtype=np.int64)
        self.peak_slots = 0

    def _take(self, k: int) -> np.ndarray:
        if k > len(self.free):
            grow = max(k - len(self.free), len(self.sums))
            start = len(self.sums)
            self.sums = np.concatenate([self.sums, np.zeros((grow, self.sums.shape[1]), np.float32)])
            self.free = np.concatenate([self.free, np.arange(start, start + grow)])
        taken, self.free = self.free[len(self.free) - k:], self.free[: len(self.free) - k]
        self.peak_slots = max(self.peak_slots, len(self.sums) - len(self.free))
        return taken

    def add(self, voxels: np.ndarray, prob: np.ndarray, weight: np.ndarray) -> None:
        keep = weight > 0
        voxels, prob, weight = voxels[keep], prob[keep], weight[keep]
        single = self.remaining[voxels] == 1
        fresh = single & (self.slot[voxels] < 0)
        self.label[voxels[fresh]] = prob[fresh].argmax(axis=1)
        shared = ~fresh
        v = voxels[shared]
        new = v[self.slot[v] < 0]
        self.slot[new] = self._take(len(new))
        self.sums[self.slot[v]] += prob[shared] * weight[shared, None]
        self.remaining[voxels] -= 1
        done = v[self.remaining[v] == 0]
        self.label[done] = self.sums[self.slot[done]].argmax(axis=1)
        self.sums[self.slot[done]] = 0
        self.free = np.concatenate([self.free, self.slot[done]])
        self.slot[done] = -1


@dataclass
class ChunkedPrediction:
    """Class index per point, and what it took: voxels, chunks, the largest chunk's voxels and the
    most votes held at once (voxels shared by chunks not all predicted yet)."""

    label: np.ndarray
    num_voxels: int
    num_chunks: int
    largest_chunk: int
    peak_pending: int


def predict_chunked(
    models: Sequence[Model],
    data: dict,
    transforms: Callable[[dict, np.random.Generator], dict],
    voxel_size: float,
    views: Sequence[TTAView] = (TTAView(),),
    num_classes: int = 200,
    max_voxels: int = 400_000,
    overlap: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "chunks",
) -> ChunkedPrediction:
    """Class index per point of ``data`` (per-point ``coord`` in metres, ``color`` 0..255, ...).

    ``transforms`` is the checkpoint's test pipeline without fragments; each chunk goes through
    :func:`~pointseg.evaluation.inference.predict_scene` (TTA views and the ensemble of
    ``models`` vote inside it), then chunks vote per voxel; ``overlap`` is in voxels.
    """
    coord = np.asarray(data["coord"])
    n = coord.shape[0]
    origin = np.array([coord[:, a].min() for a in range(3)], dtype=coord.dtype)
    vox, grid = voxelize_points(coord, voxel_size, mode="test", origin=origin)
    reps = {k: v[vox.index] for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim and len(v) == n}
    chunks = plan_chunks(grid, max_voxels, overlap)
    cover = np.zeros(vox.num_voxels, dtype=np.int32)
    for c in chunks:
        cover[c.index[c.weight > 0]] += 1
    votes = _Votes(cover, num_classes)
    rng = np.random.default_rng(0)  # the test pipeline draws nothing; predict_scene wants one
    for c in tqdm(chunks, desc=desc, unit="chunk", disable=not progress, leave=False):
        part = {k: v[c.index] for k, v in reps.items()}
        part["grid_origin"] = origin
        prob = predict_scene(models, part, transforms, views, num_classes, device, rng)
        votes.add(c.index, prob.cpu().numpy(), c.weight)
    if (votes.label < 0).any():  # every voxel's core chunk votes with weight 1: a bug if not
        raise RuntimeError(f"{int((votes.label < 0).sum())} voxels got no vote")
    return ChunkedPrediction(
        label=votes.label[vox.inverse],
        num_voxels=vox.num_voxels,
        num_chunks=len(chunks),
        largest_chunk=max(c.num_voxels for c in chunks),
        peak_pending=votes.peak_slots,
    )
