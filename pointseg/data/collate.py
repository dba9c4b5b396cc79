"""Batch voxelized samples: concatenate scenes with a batch-index column, under a voxel budget."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Per-voxel arrays concatenated over the batch (with their dtype); everything else is a list.
VOXEL_KEYS = {"feat": torch.float32, "segment": torch.int64}
# Keys already in the batch under another form.
_SKIP = {"grid_coord", "name"}


def collate(samples: Sequence[dict], max_points: int | None = None) -> dict:
    """Batch dict: ``coords`` int32 (M,4) [batch, x, y, z], ``feat`` float32 (M,C), ``segment``
    int64 (M,) (when every sample has one), ``name`` list[str]; any other sample entry (test-mode ``inverse``, ``origin_coord``,
    ``fragments``, ...) as a list over the kept scenes.

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

    counts = [len(s["grid_coord"]) for s in kept]
    coords = np.empty((total, 4), dtype=np.int32)
    coords[:, 0] = np.repeat(np.arange(len(kept), dtype=np.int32), counts)
    coords[:, 1:] = np.concatenate([s["grid_coord"] for s in kept])
    batch = {
        "coords": torch.from_numpy(coords),
        "name": [s.get("name", f"#{i}") for i, s in enumerate(kept)],
    }
    for key, dtype in VOXEL_KEYS.items():
        present = [key in s for s in kept]
        if all(present):
            batch[key] = torch.from_numpy(np.concatenate([np.asarray(s[key]) for s in kept])).to(dtype)
        elif any(present):
            raise ValueError(f"collate: only some scenes of the batch have {key!r}")
    extras = set().union(*(s.keys() for s in kept)) - set(VOXEL_KEYS) - _SKIP
    for key in sorted(extras):
        batch[key] = [s.get(key) for s in kept]
    return batch
