"""ScanNet-like annotation: over-segment patches (``segIndices``) and object groups (``segGroups``).

ScanNet's segments come from a graph-based over-segmentation and are tens to hundreds of vertices
each, never crossing object boundaries in the annotated data. Here a voxel grid per object gives
spatially coherent patches of the same size; scraps below ``MIN_PATCH`` vertices are merged into
the nearest patch of the same object. Each annotated object becomes one segGroup; a few of its
patches may be left out of the group (vertices in no group, as annotators leave some).
"""

from __future__ import annotations

import numpy as np

MIN_PATCH = 12
DROP_PROB = 0.12  # chance that an object of >= 4 patches loses one to "unannotated"


def segment_patches(verts: np.ndarray, object_id: np.ndarray, cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patch id per vertex; patches lie inside one object. Ids are the patch's smallest vertex index,
    like ScanNet's segment ids (vertex ids of the over-segmentation)."""
    n = len(verts)
    offset = rng.uniform(0, 1, size=3)
    g = np.floor(verts / cell[:, None] + offset).astype(np.int64)
    g -= g.min(axis=0)
    span = g.max(axis=0) + 1
    key = ((object_id.astype(np.int64) * span[0] + g[:, 0]) * span[1] + g[:, 1]) * span[2] + g[:, 2]
    _, patch, counts = np.unique(key, return_inverse=True, return_counts=True)
    patch = patch.ravel()
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, patch, verts)
    cent = sums / counts[:, None]
    patch_obj = np.zeros(len(counts), np.int64)
    patch_obj[patch] = object_id
    small = np.flatnonzero(counts < MIN_PATCH)
    target = np.arange(len(counts))
    for p in small:  # few per scene; a loop keeps the rule readable
        cand = np.flatnonzero((patch_obj == patch_obj[p]) & (counts >= MIN_PATCH))
        if len(cand):
            target[p] = cand[np.argmin(((cent[cand] - cent[p]) ** 2).sum(1))]
    patch = target[patch]
    first = np.full(len(counts), n, np.int64)
    np.minimum.at(first, patch, np.arange(n))
    return first[patch]


def make_groups(seg: np.ndarray, object_id: np.ndarray, labels: list[str | None], rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """segGroups (one per labelled object, in object order) and the mask of grouped vertices."""
    order = np.argsort(object_id, kind="stable")
    bounds = np.searchsorted(object_id[order], np.arange(len(labels) + 1))
    groups: list[dict] = []
    grouped = np.zeros(len(seg), bool)
    for k, label in enumerate(labels):
        idx = order[bounds[k] : bounds[k + 1]]
        if label is None or len(idx) == 0:
            continue
        segments = np.unique(seg[idx])
        if len(segments) >= 4 and rng.random() < DROP_PROB:
            segments = np.delete(segments, int(rng.integers(len(segments))))
        gid = len(groups)
        groups.append({"id": gid, "objectId": gid, "segments": segments.tolist(), "label": label})
        grouped[idx[np.isin(seg[idx], segments)]] = True
    return groups, grouped
