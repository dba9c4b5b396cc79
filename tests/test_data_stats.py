"""The cached class counts of folders without ``stats.json``: reused while the labels are the
same, recounted when a scene is relabelled under the same name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointseg.data.stats import load_class_counts
from pointseg.utils.io import save_npy

NUM_CLASSES = 6


def write_labels(root: Path, labels: dict[str, list[int]]) -> None:
    for name, seg in labels.items():
        save_npy(root / "train" / name / "segment200.npy", np.array(seg, dtype=np.int16))


def hand_counts(labels: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """Per-class point and scene counts, counted here with plain Python."""
    points = [0] * NUM_CLASSES
    scenes = [0] * NUM_CLASSES
    for seg in labels.values():
        for c in seg:
            if c >= 0:
                points[c] += 1
        for c in {c for c in seg if c >= 0}:
            scenes[c] += 1
    return points, scenes


def test_relabelled_scene_is_recounted_not_read_from_the_cache(tmp_path):
    before = {"scene0000_00": [0, 0, 1, -1], "scene0001_00": [2, 2, 2, 0]}
    write_labels(tmp_path, before)
    first = load_class_counts(tmp_path, num_classes=NUM_CLASSES)
    assert (first.points.tolist(), first.scenes.tolist()) == hand_counts(before)
    assert "cached" not in first.source
    second = load_class_counts(tmp_path, num_classes=NUM_CLASSES)
    assert "cached" in second.source  # unchanged labels come from the cache
    assert second.points.tolist() == first.points.tolist()

    # Same scene names, same file size (4 int16 labels), different labels.
    after = {"scene0000_00": before["scene0000_00"], "scene0001_00": [5, 5, 4, -1]}
    write_labels(tmp_path, {"scene0001_00": after["scene0001_00"]})
    third = load_class_counts(tmp_path, num_classes=NUM_CLASSES)
    assert "cached" not in third.source
    assert (third.points.tolist(), third.scenes.tolist()) == hand_counts(after)
    assert third.points.tolist() != first.points.tolist()
