"""Class imbalance at point level and at center level (CeCo §4.3), and how accuracy follows it.

CeCo regularizes one feature center per class present in a batch, so what a class contributes to
the regularizer is the number of batches it appears in, not its number of points. With batches
of one scene that is the number of training scenes holding the class: the "center count". The
paper's observation is that center counts are far less imbalanced than point counts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from pointseg.meta import IGNORE_INDEX, NUM_CLASSES, class_table
from pointseg.utils.io import load_npy

# Per-class arrays of one split in DATA/stats.json (written by pointseg.preprocessing).
POINT_COUNT_KEY = "class_point_counts"
SCENE_COUNT_KEY = "class_scene_counts"


@dataclass(frozen=True)
class ClassCounts:
    """Per-class point and scene (= center) counts of one split."""

    points: np.ndarray  # int64 (K,)
    scenes: np.ndarray  # int64 (K,): number of scenes in which the class has ≥ 1 point
    source: str  # where the numbers came from


def count_split(data_root: str | Path, split: str = "train", num_classes: int = NUM_CLASSES) -> ClassCounts:
    """Count by reading every ``DATA/<split>/<scene>/segment200.npy`` (class index or −1)."""
    split_dir = Path(data_root) / split
    files = sorted(split_dir.glob("*/segment200.npy"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no <scene>/segment200.npy found")
    points = np.zeros(num_classes, dtype=np.int64)
    scenes = np.zeros(num_classes, dtype=np.int64)
    for f in files:
        seg = load_npy(f)
        if seg.ndim != 1 or not np.issubdtype(seg.dtype, np.integer):
            raise ValueError(f"{f}: expected a 1-D integer array, got {seg.dtype} {seg.shape}")
        seg = seg.astype(np.int64)
        bad = (seg != IGNORE_INDEX) & ((seg < 0) | (seg >= num_classes))
        if bad.any():
            raise ValueError(f"{f}: label {int(seg[bad][0])} outside 0..{num_classes - 1} and not {IGNORE_INDEX}")
        n = np.bincount(seg[seg >= 0], minlength=num_classes)
        points += n
        scenes += n > 0
    return ClassCounts(points, scenes, f"{split_dir}/*/segment200.npy ({len(files)} scenes)")


def read_stats(path: str | Path, split: str = "train", num_classes: int = NUM_CLASSES) -> ClassCounts | None:
    """Per-class counts of ``split`` from a ``stats.json``; ``None`` when it lacks them.

    Layout: ``{"splits": {split: {"class_point_counts": [K ints], "class_scene_counts": [K ints]}}}``
    (lists of K counts, or objects keyed by class index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read JSON ({e})") from e
    splits = data.get("splits") if isinstance(data, dict) else None
    section = splits.get(split) if isinstance(splits, dict) else None
    if not isinstance(section, dict) or not {POINT_COUNT_KEY, SCENE_COUNT_KEY} <= section.keys():
        return None
    arrays = [
        _per_class_array(section[key], num_classes, f"{path}: splits.{split}.{key}")
        for key in (POINT_COUNT_KEY, SCENE_COUNT_KEY)
    ]
    return ClassCounts(arrays[0], arrays[1], str(path))


def _per_class_array(value, num_classes: int, where: str) -> np.ndarray:
    """A list of K counts, or a dict keyed by class index (as strings in JSON)."""
    out = np.zeros(num_classes, dtype=np.int64)
    if isinstance(value, list):
        if len(value) != num_classes:
            raise ValueError(f"{where}: expected {num_classes} counts, got {len(value)}")
        out[:] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            i = int(k)
            if not 0 <= i < num_classes:
                raise ValueError(f"{where}: class index {k} outside 0..{num_classes - 1}")
            out[i] = v
    else:
        raise ValueError(f"{where}: expected a list or an object of counts")
    if (out < 0).any():
        raise ValueError(f"{where}: negative count")
    return out


def load_class_counts(data_root: str | Path, split: str = "train", num_classes: int = NUM_CLASSES) -> ClassCounts:
    """Counts from ``DATA/stats.json`` when it has them, else by scanning the scenes."""
    stats_path = Path(data_root) / "stats.json"
    if stats_path.is_file():
        counts = read_stats(stats_path, split, num_classes)
        if counts is not None:
            return counts
        warnings.warn(f"{stats_path}: no per-class counts for split {split!r}; counting scenes instead")
    return count_split(data_root, split, num_classes)


def imbalance_factor(counts: np.ndarray) -> float | None:
    """max / min of the counts of the classes present (count > 0); ``None`` with no class."""
    c = np.asarray(counts)
    c = c[c > 0]
    return float(c.max() / c.min()) if c.size else None


def read_class_accuracy(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per-class accuracy (K,) from an evaluation ``metrics.json``; NaN where null or missing."""
    path = Path(path)
    try:
        per_class = json.loads(path.read_text(encoding="utf-8"))["per_class"]
        acc = np.full(num_classes, np.nan)
        for row in per_class:
            i = int(row["index"])
            if not 0 <= i < num_classes:
                raise ValueError(f"class index {i} outside 0..{num_classes - 1}")
            acc[i] = np.nan if row["acc"] is None else float(row["acc"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a metrics.json with per_class index/acc ({e!r})") from e
    return acc


def pearson(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r and two-sided p (scipy); ``None`` values when undefined (n < 3 or constant)."""
    n = int(len(x))
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "p": None, "n": n}
    res = sps.pearsonr(x, y)
    return {"r": float(res.statistic), "p": float(res.pvalue), "n": n}


def accuracy_correlations(acc: np.ndarray, points: np.ndarray, centers: np.ndarray) -> dict:
    """Correlation of per-class accuracy with point and center counts, raw and log10.

    Uses the classes with an accuracy and a non-zero count (log of 0 is undefined). Counts span
    several decades, so the raw-count r is driven by the few largest classes; the log-count r
    is the one that describes the trend over all classes.
    """
    ok = np.isfinite(acc) & (points > 0) & (centers > 0)
    a, p, c = acc[ok], points[ok].astype(np.float64), centers[ok].astype(np.float64)
    return {
        "num_classes": int(ok.sum()),
        "points": {"raw": pearson(p, a), "log10": pearson(np.log10(p), a)},
        "centers": {"raw": pearson(c, a), "log10": pearson(np.log10(c), a)},
    }


def analyze_imbalance(
    counts: ClassCounts, accuracy: np.ndarray | None = None, num_classes: int = NUM_CLASSES
) -> dict:
    """The §4.3 summary: imbalance factors (overall and per split), correlations, per-class rows."""
    table = class_table()
    splits = np.asarray(table.split) if num_classes == NUM_CLASSES else None
    result: dict = {
        "source": counts.source,
        "num_classes_present": int((counts.points > 0).sum()),
        "point_imbalance_factor": imbalance_factor(counts.points),
        "center_imbalance_factor": imbalance_factor(counts.scenes),
    }
    if splits is not None:
        result["per_split"] = {
            s: {
                "num_classes_present": int((counts.points[splits == s] > 0).sum()),
                "point_imbalance_factor": imbalance_factor(counts.points[splits == s]),
                "center_imbalance_factor": imbalance_factor(counts.scenes[splits == s]),
            }
            for s in ("head", "common", "tail")
        }
    if accuracy is not None:
        result["accuracy_correlation"] = accuracy_correlations(accuracy, counts.points, counts.scenes)
    rows = []
    for i in range(num_classes):
        row = {"index": i, "points": int(counts.points[i]), "centers": int(counts.scenes[i])}
        if splits is not None:
            row |= {"name": table.name[i], "split": str(splits[i])}
        if accuracy is not None:
            row["acc"] = None if not np.isfinite(accuracy[i]) else float(accuracy[i])
        rows.append(row)
    result["per_class"] = rows
    return result
