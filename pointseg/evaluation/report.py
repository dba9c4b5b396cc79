"""Human- and machine-readable evaluation outputs: console table, metrics.json, confusion.npz, bar chart."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from pointseg.meta import SPLITS
from pointseg.utils.io import atomic_path, atomic_write_text
from pointseg.utils.plotting import OTHER_COLOR, SPLIT_COLORS, new_figure, save_figure

SUMMARY_KEYS = ("miou", "head_miou", "common_miou", "tail_miou", "miou_absent_as_zero", "macc", "all_acc")


def _json_safe(x: Any) -> Any:
    """NaN / inf → None (JSON has no NaN), numpy scalars → Python numbers, recursively."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics_json(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """``metrics.json`` (atomic), NaN written as null."""
    atomic_write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")


def save_confusion(path: str | os.PathLike, confusion: np.ndarray) -> None:
    """``confusion.npz`` (atomic): ``confusion`` (K+1)×(K+1), rows ground truth, column K = invalid prediction."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, confusion=np.asarray(confusion, dtype=np.int64))


def _fmt(v: float | None) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def format_table(metrics: dict[str, Any]) -> str:
    """Per-class table (IoU, accuracy in %, ground-truth points; '-' where undefined) and the means."""
    lines = [f"{'idx':>3} {'id':>5} {'name':<28} {'split':<6} {'IoU':>5} {'acc':>5} {'gt_points':>10}"]
    for c in metrics["per_class"]:
        sid = "" if c["scannet_id"] is None else c["scannet_id"]
        lines.append(
            f"{c['index']:>3} {sid:>5} {c['name'][:28]:<28} {c['split']:<6} "
            f"{_fmt(c['iou'])} {_fmt(c['acc'])} {c['gt_points']:>10}"
        )
    lines.append("")
    for key in SUMMARY_KEYS:
        if key in metrics:
            label = key + (" (absent classes counted as 0)" if key == "miou_absent_as_zero" else "")
            lines.append(f"{label:<48} {_fmt(metrics[key])}")
    if "num_classes_evaluated" in metrics:
        lines.append(f"{'classes with an IoU':<48} {metrics['num_classes_evaluated']:>5}")
    for split in metrics.get("groups", SPLITS):
        if f"{split}_classes" in metrics:
            names = metrics[f"{split}_classes"]
            lines.append(f"{split} mean over {len(names)} classes: " + (", ".join(names) if len(names) <= 12 else f"{', '.join(names[:12])}, ..."))
    return "\n".join(lines)


def plot_per_class_iou(metrics: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar chart of per-class IoU coloured by head / common / tail (classes without an IoU left empty)."""
    from matplotlib.patches import Patch

    rows = metrics["per_class"]
    iou = np.array([np.nan if c["iou"] is None else c["iou"] for c in rows], dtype=float)
    colors = [SPLIT_COLORS.get(c["split"], OTHER_COLOR) for c in rows]
    fig = new_figure(max(8.0, 0.09 * len(rows)), 4.0, layout="tight")
    ax = fig.subplots()
    ax.bar(np.arange(len(rows)), np.nan_to_num(100 * iou), color=colors, width=0.85)
    ax.set_xlim(-1, len(rows))
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"class index ({metrics.get('dataset', 'scannet200')} order)")
    ax.set_ylabel("IoU (%)")
    title = f"per-class IoU: mIoU {_fmt(metrics.get('miou')).strip()}"
    for s in SPLITS:
        if f"{s}_miou" in metrics:
            title += f", {s} {_fmt(metrics[f'{s}_miou']).strip()}"
    ax.set_title(title)
    present = [s for s in SPLITS if any(c["split"] == s for c in rows)]
    if present:
        ax.legend(handles=[Patch(color=SPLIT_COLORS[s], label=s) for s in present], loc="upper right")
    save_figure(fig, path)
