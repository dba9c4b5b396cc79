"""Class imbalance at point level and at center level (CeCo §4.3), and how accuracy follows it.

CeCo regularizes one feature center per class present in a batch, so what a class contributes to
the regularizer is the number of batches it appears in, not its number of points. With batches
of one scene that is the number of training scenes holding the class: the "center count". The
paper's observation is that center counts are far less imbalanced than point counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats as sps

from pointseg.data.stats import ClassCounts, count_split, load_class_counts, read_stats
from pointseg.meta import NUM_CLASSES, class_table

__all__ = [
    "ClassCounts", "accuracy_correlations", "analyze_imbalance", "count_split", "imbalance_factor",
    "load_class_counts", "pearson", "read_class_accuracy", "read_stats",
]


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
