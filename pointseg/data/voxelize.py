"""Voxelization: grid coordinates, one representative point per voxel, inverse map, fragments.

Points are grouped by voxel with ONE value sort of packed int64 keys::

    key = voxel_key << index_bits | point_index

``voxel_key`` is the mixed-radix number of the grid cell ``(gx * ny + gy) * nz + gz`` and
``index_bits`` the fewest bits that hold every point index, both computed from the actual extent,
so that the packing is as tight as possible. Sorting the packed values (``np.sort``, a SIMD sort,
several times faster than ``np.argsort``) orders the points by voxel and, within a voxel, by point
index; the low bits give back the point order, the high bits the voxel boundaries. A random
representative is then one random offset per voxel, so no per-point random numbers are drawn.
``np.unique(..., return_inverse=True)`` would do the grouping too, but it runs an argsort plus
several passes (2-3x slower), which matters at a million points per scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Keys are int64 and must stay non-negative: 63 usable bits.
KEY_BITS = 63
GRID_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class VoxelizeResult:
    """Grouping of N points into M occupied voxels; voxel rows are in voxel-key order.

    Attributes:
        index: int64 (M,) the representative point of each voxel (random in train mode, the
            lowest point index in test mode).
        inverse: int64 (N,) voxel row of every point (test mode), or None (train mode).
        order: int64 (N,) point indices grouped by voxel (voxel rows ascending, point index
            ascending within a voxel); voxel r owns ``order[start[r]:start[r] + count[r]]``.
        start: int64 (M,) first position of each voxel in ``order``.
        count: int64 (M,) number of points in each voxel.
    """

    index: np.ndarray
    inverse: np.ndarray | None
    order: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @property
    def num_voxels(self) -> int:
        return int(self.index.shape[0])


def _scaled_columns(
    coord: np.ndarray, voxel_size: float, origin: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """``(coord - origin) / voxel_size`` as a contiguous (3, N) array, and the grid size per axis;
    ``origin`` defaults to ``coord``'s minimum and must not exceed it.

    Works on the transposed copy because NumPy reductions and broadcasts along axis 0 of an
    (N, 3) array run a 3-element inner loop, ~10x slower than on contiguous rows. The values are
    ≥ 0, so truncation to integer equals the floor; subtraction and division by a positive
    constant are monotone under rounding, so the grid maximum is the transform of the maximum.
    """
    coord = np.asarray(coord)
    if coord.ndim != 2 or coord.shape[1] != 3 or coord.shape[0] == 0:
        raise ValueError(f"voxelize: expected coord of shape (N>0, 3), got {coord.shape}")
    if not voxel_size > 0:
        raise ValueError(f"voxelize: voxel_size must be > 0, got {voxel_size}")
    dtype = coord.dtype if np.issubdtype(coord.dtype, np.floating) else np.dtype(np.float64)
    scaled = np.ascontiguousarray(coord.T, dtype=dtype)
    size = dtype.type(voxel_size)
    sizes = []
    for axis, row in enumerate(scaled):
        low, high = row.min(), row.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("voxelize: coordinates are not finite")
        if origin is not None:
            if not origin[axis] <= low:
                raise ValueError(f"voxelize: grid origin {origin[axis]} above the minimum {low} along axis {axis}")
            low = dtype.type(origin[axis])
        row -= low
        row /= size
        top = np.floor((high - low) / size)
        if top > GRID_MAX:
            raise ValueError(
                f"voxelize: extent {float(high - low):.6g} along axis {axis} at voxel size "
                f"{voxel_size} exceeds the int32 grid"
            )
        sizes.append(int(top) + 1)
    return scaled, sizes


def grid_coordinates(coord: np.ndarray, voxel_size: float) -> np.ndarray:
    """Voxel coordinates ``floor((coord - coord.min(0)) / voxel_size)`` as int32 (N, 3), all ≥ 0.

    Computed in the dtype of ``coord`` (float32 for scenes), so that the same points always land
    in the same voxels whoever calls this.
    """
    scaled, _ = _scaled_columns(coord, voxel_size)
    return np.ascontiguousarray(scaled.T.astype(np.int32))


def pack_keys(columns: list[np.ndarray] | np.ndarray, sizes: list[int]) -> tuple[np.ndarray, int]:
    """Packed sort keys ``voxel_key << index_bits | point_index`` and ``index_bits``.

    ``columns`` are the three grid coordinates (integer, or non-negative floats truncated to
    integer), ``sizes`` the grid size per axis (every coordinate along axis a is < sizes[a]).
    Raises ValueError when grid and point count do not fit in 63 bits together; the check is
    done on Python integers, so the packing itself can never overflow.
    """
    n = len(columns[0])
    nx, ny, nz = sizes
    index_bits = (n - 1).bit_length()
    voxel_bits = (nx * ny * nz - 1).bit_length()
    if voxel_bits + index_bits > KEY_BITS:
        raise ValueError(
            f"voxelize: a grid of {nx}x{ny}x{nz} voxels with {n} points needs "
            f"{voxel_bits}+{index_bits} key bits, more than {KEY_BITS}; use a larger voxel size "
            f"or crop the scene"
        )
    # Every intermediate below is <= (nx*ny*nz - 1) << index_bits < 2**63 by the check above.
    key = columns[0].astype(np.int64)
    key *= ny
    key += columns[1].astype(np.int64)
    key *= nz
    key += columns[2].astype(np.int64)
    key <<= index_bits
    key |= np.arange(n, dtype=np.int64)
    return key, index_bits


def _check_mode(mode: str, rng: np.random.Generator | None) -> None:
    if mode not in ("train", "test"):
        raise ValueError(f"voxelize: mode must be 'train' or 'test', got {mode!r}")
    if mode == "train" and rng is None:
        raise ValueError("voxelize: train mode needs an rng for the random representative")


def voxelize(
    grid: np.ndarray, mode: str = "train", rng: np.random.Generator | None = None
) -> VoxelizeResult:
    """Group points by voxel and pick one representative point per occupied voxel.

    Args:
        grid: integer (N, 3) voxel coordinates, all ≥ 0 (see ``grid_coordinates``).
        mode: "train": a uniformly random point of each voxel (needs ``rng``); no inverse map.
            "test": the lowest-index point of each voxel, plus the inverse map point → voxel row.
        rng: the generator for the train-mode choice.
    """
    _check_mode(mode, rng)
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        raise ValueError(f"voxelize: expected grid of shape (N>0, 3), got {grid.shape}")
    if not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"voxelize: grid must be integer, got {grid.dtype}")
    if grid.min() < 0:
        raise ValueError(f"voxelize: grid coordinates must be >= 0, got {grid.min(0).tolist()}")
    columns = [grid[:, axis] for axis in range(3)]
    sizes = [int(col.max()) + 1 for col in columns]
    return _group(*pack_keys(columns, sizes), mode, rng)[0]


def voxelize_points(
    coord: np.ndarray,
    voxel_size: float,
    mode: str = "train",
    rng: np.random.Generator | None = None,
    origin: np.ndarray | None = None,
) -> tuple[VoxelizeResult, np.ndarray]:
    """``voxelize(grid_coordinates(coord, voxel_size), mode, rng)`` without the (N, 3) grid.

    Returns the result and the int32 (M, 3) grid coordinates of the voxel rows, identical to
    ``grid_coordinates(coord, voxel_size)[result.index]``. This is the path of the ``Voxelize``
    transform: keys are built straight from the scaled coordinates. ``origin`` (at or below every
    point) places the grid: a part of a scene voxelized with the scene's minimum as origin gets
    the voxels, and grid coordinates, it has in the whole scene.
    """
    _check_mode(mode, rng)
    scaled, sizes = _scaled_columns(coord, voxel_size, origin)
    result, voxel_key = _group(*pack_keys(scaled, sizes), mode, rng)
    # Decode the mixed-radix voxel keys (division by a scalar is cheap in NumPy) rather than
    # gathering the scaled coordinates of the representatives at random positions.
    grid = np.empty((result.num_voxels, 3), dtype=np.int32)
    _, ny, nz = sizes
    rest, grid[:, 2] = np.divmod(voxel_key, nz)
    grid[:, 0], grid[:, 1] = np.divmod(rest, ny)
    return result, grid


def _group(
    key: np.ndarray, index_bits: int, mode: str, rng: np.random.Generator | None
) -> tuple[VoxelizeResult, np.ndarray]:
    """Sort packed keys (in place) and read grouping, representatives and inverse from them;
    also return the voxel key of each row."""
    n = key.shape[0]
    key.sort()
    order = key & ((1 << index_bits) - 1)
    key >>= index_bits
    is_first = np.empty(n, dtype=bool)
    is_first[0] = True
    np.not_equal(key[1:], key[:-1], out=is_first[1:])
    start = np.flatnonzero(is_first)
    count = np.diff(start, append=n)
    if mode == "train":
        # floor(u * count) is uniform on 0..count-1; the clamp only guards the rounding of
        # u * count up to count when u is within 2**-53 of 1. (rng.integers with an array of
        # bounds gives the same distribution at ~4x the cost.)
        offset = rng.random(start.shape[0])
        offset *= count
        pick = offset.astype(np.int64)
        np.minimum(pick, count - 1, out=pick)
        pick += start
        index = order[pick]
        inverse = None
    else:
        index = order[start]
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.cumsum(is_first) - 1
    result = VoxelizeResult(index=index, inverse=inverse, order=order, start=start, count=count)
    return result, key[start]


def fragments(grid_or_result: np.ndarray | VoxelizeResult) -> list[np.ndarray]:
    """Point indices of each fragment: fragment j takes the (j mod count)-th point of each voxel.

    There are as many fragments as the largest voxel has points; each fragment holds one point
    per voxel, in the voxel-row order of ``voxelize``, and together they cover every point, so a
    prediction per fragment gives every point a prediction from its own voxel representative.
    Fragment 0 is the test-mode representative set.
    """
    res = grid_or_result
    if not isinstance(res, VoxelizeResult):
        res = voxelize(res, mode="test")
    k = int(res.count.max())
    return [res.order[res.start + (j % res.count)] for j in range(k)]
