"""Figures of the analysis tools: collapse curves (paper Figs. 2/4) and the imbalance plot."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from pointseg.utils.plotting import OTHER_COLOR, SPLIT_COLORS, new_figure, save_figure

GROUPS = ("overall", "head", "common", "tail")


def plot_collapse_curves(records: Sequence[dict], path: str | os.PathLike) -> None:
    """Paper Figs. 2/4: the collapse metrics of successive checkpoints, one line per class group.

    ``records`` are the entries of ``collapse.json``: ``iteration`` (may be ``None``),
    ``metrics`` (output of ``CollapseAccumulator.evaluate``) and, when present,
    ``center_metrics`` (``center_space_metrics``: the last panel, CeCo's center embedding).
    """
    iters = [r.get("iteration") for r in records]
    use_iter = all(i is not None for i in iters)
    x = np.asarray(iters if use_iter else range(len(records)), dtype=float)
    panels = (
        ("metrics", "equiangular_means", "Std cos(ẑ_k, ẑ_k')  (class means)"),
        ("metrics", "maxangle_means", "Avg |cos(ẑ_k, ẑ_k') + 1/(K−1)|  (class means)"),
        ("metrics", "nc1", "NC1  Tr(Σ_W Σ_B⁺)/K"),
        ("metrics", "equiangular_classifier", "Std cos(ŵ_k, ŵ_k')  (classifier)"),
        ("metrics", "maxangle_classifier", "Avg |cos(ŵ_k, ŵ_k') + 1/(K−1)|  (classifier)"),
        ("center_metrics", "equiangular_means", "Std cos(e_k, e_k')  (CeCo's center embedding)"),
    )
    fig = new_figure(15, 8, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (space, key, title) in zip(axes, panels):
        if not any(space in r for r in records):
            ax.axis("off")
            continue
        for group in GROUPS:
            y = [
                np.nan if (v := (r.get(space) or {}).get(group, {}).get(key)) is None else v for r in records
            ]
            if np.all(np.isnan(y)):
                continue
            ax.plot(x, y, marker="o", ms=3, label=group, color=SPLIT_COLORS[group])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration" if use_iter else "checkpoint")
        if key == "nc1":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def plot_imbalance(result: dict, path: str | os.PathLike) -> None:
    """Log-log point count vs center count per class (by split); accuracy vs counts if known."""
    rows = [r for r in result["per_class"] if r["points"] > 0]
    has_acc = any(r.get("acc") is not None for r in rows)
    fig = new_figure(15 if has_acc else 6, 5, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 3 if has_acc else 1))
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r.get("split", "overall"), []).append(r)
    for split, rs in by_split.items():
        color = SPLIT_COLORS.get(split, OTHER_COLOR)
        pts = np.array([r["points"] for r in rs], dtype=float)
        ctr = np.array([r["centers"] for r in rs], dtype=float)
        axes[0].scatter(pts, ctr, s=12, color=color, label=split, alpha=0.8)
        if has_acc:
            acc = np.array([np.nan if r.get("acc") is None else r["acc"] for r in rs], dtype=float)
            axes[1].scatter(pts, acc, s=12, color=color, label=split, alpha=0.8)
            axes[2].scatter(ctr, acc, s=12, color=color, label=split, alpha=0.8)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="points per class",
        ylabel="centers per class (scenes)",
        title=f"point IF {_fmt(result['point_imbalance_factor'])}, "
        f"center IF {_fmt(result['center_imbalance_factor'])}",
    )
    if has_acc:
        corr = result.get("accuracy_correlation", {})
        for ax, key, label in ((axes[1], "points", "points per class"), (axes[2], "centers", "centers per class")):
            r = corr.get(key, {}).get("log10", {}).get("r")
            ax.set(xscale="log", xlabel=label, ylabel="accuracy", title=f"r(acc, log10 {key}) = {_fmt(r)}")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"
