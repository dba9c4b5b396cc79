"""Backend-neutral sparse voxel tensor: features on integer coordinates plus a per-forward cache."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class SparseTensor:
    """Features ``(M, C)`` float32 on voxel coordinates ``(M, 4)`` int32 ``[batch, x, y, z]``.

    ``coords`` are in units of the tensor's own grid: a tensor of ``stride`` 4 has coordinates
    ``floor(original / 4)``. ``cache`` is shared by every tensor derived from the same input
    within one forward pass; backends keep coordinate and kernel maps there (keyed by stride) so
    that each map is built once and reused by every layer, the transposed convolutions and backward.
    """

    __slots__ = ("feats", "coords", "stride", "cache")

    def __init__(
        self,
        feats: Tensor,
        coords: Tensor,
        stride: int = 1,
        cache: dict[Any, Any] | None = None,
        validate: bool = True,
    ) -> None:
        if validate:
            coords = _validated_coords(coords)
            _validate_feats(feats, coords)
            if cache is None:
                _check_unique(coords)
        self.feats = feats
        self.coords = coords
        self.stride = int(stride)
        self.cache: dict[Any, Any] = {} if cache is None else cache
        if validate:
            self.cache.setdefault(("coords", self.stride), coords)

    def replace_feats(self, feats: Tensor) -> "SparseTensor":
        """Same coordinates, stride and cache, new features (BatchNorm, ReLU, additions)."""
        if feats.shape[0] != self.feats.shape[0]:
            raise ValueError(
                f"replace_feats: {feats.shape[0]} feature rows for {self.feats.shape[0]} voxels"
            )
        return SparseTensor(feats, self.coords, self.stride, self.cache, validate=False)

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max().item()) + 1 if self.coords.shape[0] else 0

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (
            f"SparseTensor(voxels={self.coords.shape[0]}, channels={self.feats.shape[1]}, "
            f"stride={self.stride}, device={self.feats.device})"
        )


def _validated_coords(coords: Tensor) -> Tensor:
    if not isinstance(coords, Tensor):
        raise TypeError(f"SparseTensor: coords must be a torch.Tensor, got {type(coords).__name__}")
    if coords.is_floating_point() or coords.is_complex() or coords.dtype == torch.bool:
        raise TypeError(
            f"SparseTensor: coords must be integer voxel indices (int32), got {coords.dtype}; "
            "voxelize the points first"
        )
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(
            f"SparseTensor: coords must have shape (M, 4) [batch, x, y, z], got {tuple(coords.shape)}"
        )
    if coords.shape[0] == 0:
        raise ValueError("SparseTensor: no points (coords has 0 rows)")
    if bool((coords < 0).any()):
        bad = coords[(coords < 0).any(dim=1)][0].tolist()
        raise ValueError(
            f"SparseTensor: negative coordinates (e.g. {bad}); batch and grid indices must be >= 0"
        )
    if int(coords[:, 1:].max()) > MAX_GRID_INDEX:
        raise ValueError(f"SparseTensor: grid indices above {MAX_GRID_INDEX} (2**{_BITS} voxels per axis)")
    if int(coords[:, 0].max()) > MAX_BATCH_INDEX:
        raise ValueError(f"SparseTensor: batch indices above {MAX_BATCH_INDEX}")
    # spconv silently computes garbage on non-contiguous or int64 indices.
    return coords.to(torch.int32).contiguous()


def _validate_feats(feats: Tensor, coords: Tensor) -> None:
    if not isinstance(feats, Tensor):
        raise TypeError(f"SparseTensor: feats must be a torch.Tensor, got {type(feats).__name__}")
    if feats.dtype != torch.float32:
        raise TypeError(f"SparseTensor: feats must be float32, got {feats.dtype}")
    if feats.dim() != 2:
        raise ValueError(f"SparseTensor: feats must have shape (M, C), got {tuple(feats.shape)}")
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(
            f"SparseTensor: {feats.shape[0]} feature rows for {coords.shape[0]} coordinates"
        )
    if feats.device != coords.device:
        raise ValueError(f"SparseTensor: feats on {feats.device} but coords on {coords.device}")


def _check_unique(coords: Tensor) -> None:
    keys = pack_coords(coords)
    sorted_keys = torch.sort(keys).values
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if bool(dup.any()):
        n = int(dup.sum().item())
        raise ValueError(
            f"SparseTensor: {n} duplicate coordinates; voxelize so each voxel appears once"
        )


# Coordinates are packed into one non-negative int64 key: 17 bits per spatial axis (2.6 km at
# 2 cm; a margin of 1 keeps the neighbours at -1 and +2 representable) and the 12 bits above them
# for the batch index, so keys of different scenes never collide and sort scene by scene.
_BITS = 17
_MARGIN = 1
_BATCH_BITS = 63 - 3 * _BITS
MAX_GRID_INDEX = 2**_BITS - 4
MAX_BATCH_INDEX = 2**_BATCH_BITS - 1


def pack_coords(coords: Tensor) -> Tensor:
    """``[b, x, y, z]`` → int64 key, order-preserving (lexicographic in b, x, y, z)."""
    c = coords.to(torch.int64)
    key = c[:, 0]
    for d in (1, 2, 3):
        key = (key << _BITS) | (c[:, d] + _MARGIN)
    return key


def offset_key(dx: int, dy: int, dz: int) -> int:
    """Key difference of a spatial offset (valid while no axis leaves [-1, 2**17 - 1))."""
    return (dx << (2 * _BITS)) + (dy << _BITS) + dz


def fresh_cache(x: SparseTensor) -> SparseTensor:
    """The same tensor with an empty cache (maps of an earlier forward or backend are dropped)."""
    return SparseTensor(x.feats, x.coords, x.stride, {("coords", x.stride): x.coords}, validate=False)
