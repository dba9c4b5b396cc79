"""Semantic-label metrics (ScanNet's benchmark rule) from a (K+1)×(K+1) confusion matrix.

Rows are ground truth, columns predictions. Column K collects predictions that are not one of
the K classes (−1, ≥ K, anything invalid): by the benchmark's rule such a prediction is a miss
(false negative of the ground-truth class, false positive of no class). Row K stays zero: vertices
whose ground truth is not one of the K classes are ignored. Memory is constant in the split size.
Class names, ids and evaluation groups (ScanNet200's head / common / tail) come from the dataset's
spec (``pointseg.datasets``); without one, K = 200 means ScanNet200.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pointseg import meta
from pointseg.datasets import DatasetSpec, default_spec
from pointseg.utils.comm import all_reduce_, collective_device, is_distributed

ArrayLike = np.ndarray | torch.Tensor

# Signed → unsigned view of the same width: a negative value becomes huge, so one
# ``np.minimum(x, K)`` sends every value outside 0..K−1 to K without a boolean mask.
_UNSIGNED = {np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}
_SIGNED = {np.dtype(np.uint32): np.int32, np.dtype(np.uint64): np.int64}


def _as_int_array(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{what}: expected integer class indices, got dtype {x.dtype}")
    return x.reshape(-1)


def _clip_to_other(x: np.ndarray, k: int) -> np.ndarray:
    """Class index array with every value outside 0..k−1 replaced by k (int32 or int64)."""
    if x.dtype in _UNSIGNED:
        return np.minimum(x.view(_UNSIGNED[x.dtype]), k).view(x.dtype)
    if x.dtype in _SIGNED:
        return np.minimum(x, k).view(_SIGNED[x.dtype])
    # Small or unusual integer types: widen once, then the same trick.
    return _clip_to_other(x.astype(np.int64), k)


def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN (no warning) when there are none."""
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


class SemSegMetric:
    """Accumulates a confusion matrix scene by scene (``process``) and summarises it (``evaluate``).

    Works on vertex labels for the benchmark and on voxel labels for fast validation during
    training; accepts numpy arrays and torch tensors of any integer dtype.
    """

    def __init__(self, num_classes: int = meta.NUM_CLASSES, spec: DatasetSpec | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.spec = spec
        self.confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def reset(self) -> None:
        self.confusion[:] = 0

    def process(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one scene (or batch): ``pred`` and ``gt`` are class indices of the same points."""
        pred = _as_int_array(pred, "pred")
        gt = _as_int_array(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred has {pred.size} entries but gt has {gt.size}")
        k = self.num_classes
        # Invalid ground truth lands in row K and is dropped below: cheaper than masking.
        g, p = _clip_to_other(gt, k), _clip_to_other(pred, k)
        if (k + 1) ** 2 > np.iinfo(np.int32).max:  # int32 keys would overflow
            g, p = g.astype(np.int64), p.astype(np.int64)
        key = g * (k + 1) + p
        counts = np.bincount(key, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
        self.confusion[:k] += counts[:k]

    def all_reduce(self) -> None:
        """Sum the confusion matrix over all processes (no-op outside torch.distributed)."""
        if not is_distributed():
            return
        t = torch.from_numpy(self.confusion).to(collective_device())
        all_reduce_(t)
        self.confusion[:] = t.cpu().numpy()

    def evaluate(self) -> dict[str, Any]:
        """Benchmark summary: see :func:`summarize`."""
        return summarize(self.confusion, self.spec)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """tp, fp, fn, gt_points (int64) and iou, acc (float64, NaN where undefined) per class."""
    k = confusion.shape[0] - 1
    c = confusion.astype(np.int64)
    tp = np.diag(c)[:k]
    gt_points = c[:k].sum(axis=1)  # includes misses in column K
    fp = c[:k, :k].sum(axis=0) - tp  # predictions of the class on vertices of other classes
    fn = gt_points - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
        acc = np.where(gt_points > 0, tp / np.maximum(gt_points, 1), np.nan)
    return {"tp": tp, "fp": fp, "fn": fn, "gt_points": gt_points, "iou": iou, "acc": acc}


def summarize(confusion: np.ndarray, spec: DatasetSpec | None = None) -> dict[str, Any]:
    """Summary of a (K+1)×(K+1) confusion matrix by ScanNet's semantic-label rule.

    ``miou`` and the group means are means over classes that have an IoU (absent from the ground
    truth and never predicted → NaN, left out); ``<group>_classes`` name the classes each group
    mean is over (a benchmark that uses some of the 200 classes is scored on those it holds, plus
    any other class it predicts). ``miou_absent_as_zero`` counts absent classes as 0 over all K
    classes (Pointcept's convention). Class names, ids and groups come from ``spec`` (which must
    have K classes); without it only K = 200 (ScanNet200) has them, other K get ``class_<i>``.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] < 2:
        raise ValueError(f"confusion matrix must be (K+1)×(K+1), got shape {confusion.shape}")
    k = confusion.shape[0] - 1
    if spec is None and k == meta.NUM_CLASSES:
        spec = default_spec()
    if spec is not None and spec.num_classes != k:
        raise ValueError(f"confusion matrix has {k} classes but dataset {spec.name!r} has {spec.num_classes}")
    s = per_class_scores(confusion)
    iou, acc = s["iou"], s["acc"]
    total = int(s["gt_points"].sum())
    out: dict[str, Any] = {
        "miou": _nanmean(iou),
        "miou_absent_as_zero": float(np.nan_to_num(iou, nan=0.0).sum() / k),
        "macc": _nanmean(acc),
        "all_acc": float(s["tp"].sum() / total) if total else float("nan"),
        "num_classes_evaluated": int((~np.isnan(iou)).sum()),
        "num_points": total,
    }
    if spec is not None:
        out["dataset"] = spec.name
        out["groups"] = list(spec.group_names)
        for group, mask in spec.group_masks.items():
            out[f"{group}_miou"] = _nanmean(iou[mask])
            out[f"{group}_classes"] = [spec.names[i] for i in np.flatnonzero(mask & ~np.isnan(iou))]
        names, splits, ids = spec.names, tuple(spec.class_group(i) for i in range(k)), spec.ids.tolist()
    else:
        names, splits, ids = tuple(f"class_{i}" for i in range(k)), ("",) * k, [None] * k
    out["per_class"] = [
        {
            "index": i,
            "scannet_id": ids[i],
            "name": names[i],
            "split": splits[i],
            "iou": float(iou[i]),
            "acc": float(acc[i]),
            "gt_points": int(s["gt_points"][i]),
        }
        for i in range(k)
    ]
    return out
