"""The official ScanNet label rule (``BenchmarkScripts/ScanNet200/preprocess_scannet200.py``;
Pointcept's ScanNet preprocessing applies it to the 20 classes as well).

Every vertex starts unlabelled. For each segment group in file order, the vertices whose
over-segment id is in the group's ``segments`` get the class of the group's ``label`` (raw
category); a later group overwrites an earlier one, also when its label is no class. How a raw
category becomes a class is the dataset's (``DatasetSpec.raw_labels``): for ScanNet200 the
ScanNet id of the first tsv row whose ``raw_category`` equals the label (no row → 0), for ScanNet
v2 its ``nyu40id``; ids that are not one of the dataset's classes are unlabelled. Here the result
is the contiguous class index 0..K−1 with −1 for unlabelled (``meta.IGNORE_INDEX``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pointseg import meta
from pointseg.datasets.base import RawLabelRule
from pointseg.datasets.scannet200 import raw_labels as scannet200_raw_labels


def group_class_index(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class index (−1 = not one of the 200) and an "unknown raw category" flag per group label."""
    table = meta.raw_category_table()  # first tsv row wins, as in the official script
    scannet_ids = np.array([table.get(label, 0) for label in labels], dtype=np.int64)
    unknown = np.array([label not in table for label in labels], dtype=bool)
    return meta.class_table().to_index(scannet_ids), unknown


def scannet200_labels(
    seg_indices: np.ndarray, seg_groups: Sequence[dict]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-vertex ``(segment, instance, unknown_vertices)`` by the official ScanNet200 rule.

    ``segment`` is the class index 0..199 or −1, ``instance`` the ``id`` of the last group that
    covers the vertex or −1 (the same overwrite order; a group whose label is not one of the 200
    still sets the instance, as in Pointcept), ``unknown_vertices`` the number of vertices whose
    final group has a label missing from the tsv (they end up −1; counted for the summary).
    """
    segments, instance, unknown_vertices = scannet_labels(seg_indices, seg_groups, {"scannet200": scannet200_raw_labels})
    return segments["scannet200"], instance, unknown_vertices


def scannet_labels(
    seg_indices: np.ndarray, seg_groups: Sequence[dict], rules: Mapping[str, RawLabelRule]
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Per-vertex labels of several datasets at once (one pass over the groups, as Pointcept
    writes ``segment20`` and ``segment200`` together): ``({name: segment}, instance,
    unknown_vertices)`` for ``rules`` mapping a dataset name to its raw-category rule; the rest as
    :func:`scannet200_labels`."""
    seg_indices = np.asarray(seg_indices, dtype=np.int64)
    # Work on the distinct segment ids (a few thousand) instead of the vertices: ``owner`` is the
    # position of the last group that lists each segment, -1 for none.
    seg_ids, inverse = np.unique(seg_indices, return_inverse=True)
    owner = np.full(len(seg_ids), -1, dtype=np.int64)
    if len(seg_ids):
        for g, group in enumerate(seg_groups):  # file order, later groups overwrite
            segments = np.asarray(group["segments"], dtype=np.int64).ravel()
            pos = np.minimum(np.searchsorted(seg_ids, segments), len(seg_ids) - 1)
            owner[pos[seg_ids[pos] == segments]] = g
    vertex_owner = owner[inverse.ravel()]
    labelled = vertex_owner >= 0

    labels = [str(g["label"]) for g in seg_groups]
    unknown = np.array([label not in meta.raw_category_table() for label in labels], dtype=bool)
    ids = np.array([int(g["id"]) for g in seg_groups], dtype=np.int64)
    segments = {}
    for name, rule in rules.items():
        classes = np.asarray(rule(labels), dtype=np.int64)
        segment = np.full(len(seg_indices), meta.IGNORE_INDEX, dtype=np.int64)
        segment[labelled] = classes[vertex_owner[labelled]]
        segments[name] = segment
    instance = np.full(len(seg_indices), -1, dtype=np.int64)
    instance[labelled] = ids[vertex_owner[labelled]]
    unknown_vertices = int(unknown[vertex_owner[labelled]].sum()) if len(labels) else 0
    return segments, instance, unknown_vertices


def unknown_categories(seg_groups: Sequence[dict]) -> list[str]:
    """Group labels of a scene that are not a ``raw_category`` of the tsv (sorted, distinct)."""
    table = meta.raw_category_table()
    return sorted({str(g["label"]) for g in seg_groups} - table.keys())


def dangling_segments(seg_indices: np.ndarray, seg_groups: Sequence[dict]) -> tuple[int, int]:
    """``(dangling, aggregated)``: how many distinct segment ids the groups of the aggregation
    list, and how many of them no vertex of ``segs.json`` has. The official script ignores them
    silently; most dangling means the two files come from different scans."""
    listed = [np.asarray(g["segments"], dtype=np.int64).ravel() for g in seg_groups]
    aggregated = np.unique(np.concatenate(listed)) if listed else np.zeros(0, dtype=np.int64)
    dangling = np.setdiff1d(aggregated, np.asarray(seg_indices, dtype=np.int64), assume_unique=False)
    return int(len(dangling)), int(len(aggregated))
