"""The batch contract: one function lays voxelized samples out as the network's input, for training
(``collate``, under a voxel budget) and for prediction (``pointseg.evaluation.inference``) alike."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Per-voxel arrays concatenated over the batch (with their dtype); everything else is a list.
VOXEL_KEYS = {"feat": np.float32, "segment": np.int64}
# Keys already in the batch under another form.
_SKIP = {"grid_coord", "name"}


class _BatchRequired(TypedDict):
    coords: torch.Tensor  # int32 (M, 4): [scene index in the batch, x, y, z] voxel coordinates
    feat: torch.Tensor  # float32 (M, C)
    name: list[str]  # scene ids ("#i" for a sample without one)


class Batch(_BatchRequired, total=False):
    """What ``make_batch`` returns. A plain dict at run time, so the DataLoader (workers, pinned
    memory), device moves and the segmentor's ``batch["coords"]`` need nothing new.

    Any other sample entry (test-mode ``inverse``, ``index``, ``fragments``, ``num_points``, ...)
    is there too, as a list over the scenes: those are per-scene, point-level, and only the
    caller knows how to use them.
    """

    segment: torch.Tensor  # int64 (M,), class or ignore; only when every scene has one


def _voxel_array(arrays: list[Any], dtype: type) -> torch.Tensor:
    # One scene (prediction) needs no concatenation, nor a copy when it is already of the dtype.
    array = np.concatenate(arrays) if len(arrays) > 1 else np.asarray(arrays[0])
    return torch.from_numpy(np.require(array, dtype=dtype, requirements=("C", "W")))


def make_batch(samples: Sequence[dict]) -> Batch:
    """The batch of voxelized ``samples`` (``grid_coord`` int (M_i, 3), ``feat``, optional
    ``segment``), their voxels concatenated in order, scene i's rows carrying batch index i."""
    if not samples:
        raise ValueError("make_batch: empty batch")
    counts = [len(s["grid_coord"]) for s in samples]
    coords = np.empty((sum(counts), 4), dtype=np.int32)
    coords[:, 0] = np.repeat(np.arange(len(samples), dtype=np.int32), counts)
    coords[:, 1:] = np.concatenate([s["grid_coord"] for s in samples])
    batch: dict[str, Any] = {
        "coords": torch.from_numpy(coords),
        "name": [s.get("name", f"#{i}") for i, s in enumerate(samples)],
    }
    for key, dtype in VOXEL_KEYS.items():
        present = [key in s for s in samples]
        if all(present):
            batch[key] = _voxel_array([s[key] for s in samples], dtype)
        elif any(present):
            raise ValueError(f"make_batch: only some scenes of the batch have {key!r}")
    if "feat" not in batch:
        raise ValueError("make_batch: the samples have no 'feat'")
    extras = set().union(*(s.keys() for s in samples)) - set(VOXEL_KEYS) - _SKIP
    for key in sorted(extras):
        batch[key] = [s.get(key) for s in samples]
    return batch  # type: ignore[return-value]


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """The batch with its tensors on ``device`` (the per-scene lists stay as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}  # type: ignore[return-value]


def collate(samples: Sequence[dict], max_points: int | None = None) -> Batch:
    """``make_batch`` of the samples that fit in ``max_points`` voxels (training's memory bound).

    A scene that would push the batch beyond ``max_points`` voxels is dropped with a warning
    naming it; the first scene is always kept (with a warning if it alone exceeds the budget).
    """
    if not samples:
        raise ValueError("collate: empty batch")
    kept = []
    total = 0
    for i, sample in enumerate(samples):
        m = len(sample["grid_coord"])
        name = sample.get("name", f"#{i}")
        if max_points is not None and total + m > max_points:
            if not kept:
                logger.warning("collate: scene %s alone has %d voxels > max_points %d; kept", name, m, max_points)
            else:
                logger.warning(
                    "collate: dropped scene %s (%d voxels): batch would exceed max_points %d", name, m, max_points
                )
                continue
        kept.append(sample)
        total += m
    return make_batch(kept)
