"""Which scenes an epoch visits: class-aware repeat-factor sampling (``data.sampler``).

The uniform order is torch's ``DistributedSampler``; this one, like it, is a pure function of
(seed, epoch, rank), so a resumed run skips to the exact batch it stopped at and every process
of a distributed run agrees on the epoch without talking.

Repeat-factor sampling (RFS; Gupta et al., "LVIS", CVPR 2019, Sec. 4.2) over scenes: with f_c the
share of training scenes holding class c, a class's repeat factor is r_c = max(1, sqrt(t / f_c))
and a scene's is the largest over its classes, r_i = max_c r_c. Each epoch a scene is visited
floor(r_i) times, plus once more with probability frac(r_i) (stochastic rounding, drawn per
(seed, epoch)). A repeated visit is a distinct item (scene + n·copy), so it gets augmentations of
its own (``ScanNet200Dataset.rng``). torch's samplers have no repeat-factor sampler and
detectron2's draws from the global RNG, so the few lines are written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pointseg.datasets import DatasetSpec, default_spec
from pointseg.meta import IGNORE_INDEX
from pointseg.utils.io import load_npy

SAMPLERS = ("uniform", "repeat_factor")
RFS_STREAM = 0x5A3  # keeps the draws apart from the augmentation streams (seed, epoch, index)


def scene_classes(scene_dirs: Sequence, num_classes: int, spec: DatasetSpec | None = None) -> list[np.ndarray]:
    """Sorted class indices present in each scene's labels (the label file of ``spec``, default
    ScanNet200's ``segment200.npy``; a class subset's indices), read once."""
    spec = default_spec() if spec is None else spec
    out = []
    for d in scene_dirs:
        seg = spec.to_classes(load_npy(d / spec.label_file).astype(np.int64))
        present = np.unique(seg[(seg != IGNORE_INDEX) & (seg >= 0) & (seg < num_classes)])
        out.append(present)
    return out


def repeat_factors(classes_per_scene: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """r_i = max over the scene's classes of max(1, sqrt(t / f_c)); 1 for a scene with no class."""
    if not threshold > 0:
        raise ValueError(f"repeat-factor threshold must be > 0, got {threshold}")
    n = len(classes_per_scene)
    if n == 0:
        return np.zeros(0)
    counts: dict[int, int] = {}
    for present in classes_per_scene:
        for c in present.tolist():
            counts[c] = counts.get(c, 0) + 1
    r_class = {c: max(1.0, float(np.sqrt(threshold / (k / n)))) for c, k in counts.items()}
    return np.array([max((r_class[c] for c in p.tolist()), default=1.0) for p in classes_per_scene])


def repeat_factor_items(factors: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """One epoch's items in visiting order (before sharding): each scene's stochastically rounded
    number of copies (item = scene + n·copy), shuffled; a pure function of (seed, epoch)."""
    n = factors.size
    rng = np.random.default_rng((int(seed), int(epoch), RFS_STREAM))
    whole = np.floor(factors).astype(np.int64)
    copies = whole + (rng.random(n) < factors - whole)
    items = np.concatenate([s + n * np.arange(k, dtype=np.int64) for s, k in enumerate(copies)] or [np.zeros(0, np.int64)])
    return items[rng.permutation(items.size)]


def shard(items: np.ndarray, rank: int, world_size: int) -> list[int]:
    """This process's share, as ``DistributedSampler`` cuts it: padded by wrapping to a multiple
    of ``world_size``, then every ``world_size``-th item from ``rank``."""
    if world_size > 1 and items.size % world_size:
        pad = world_size - items.size % world_size
        items = np.concatenate([items, items[:pad]])
    return items[rank::world_size].tolist()
