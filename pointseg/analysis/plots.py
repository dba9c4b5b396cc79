"""Figures of the analysis tools: collapse curves (paper Figs. 2/4) and the imbalance plot."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pointseg.meta import SPLITS
from pointseg.utils.plotting import OTHER_COLOR, SPLIT_COLORS, new_figure, save_figure

if TYPE_CHECKING:  # the study module imports these plots
    from pointseg.analysis.study import StudyResults

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


# ------------------------------------------------------------------------------ the long-tail study
def _labels() -> dict[str, str]:
    from pointseg.analysis.study import ARMS

    return {arm: label for arm, (_, label) in ARMS.items()}


def plot_study_bars(results: StudyResults, path: str | os.PathLike) -> None:
    """Per-split val mIoU of every arm (mean ± SD over seeds) and per-class IoU of the first seed."""
    labels = _labels()
    arms = list(results.runs)
    fig = new_figure(15, 4.5, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 3])
    splits = SPLITS
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        vals = np.array([[r.metrics[f"{s}_miou"] for s in splits] for r in results.runs[arm]]) * 100
        sd = vals.std(axis=0, ddof=1) if len(vals) > 1 else np.zeros(len(splits))
        left.bar(np.arange(len(splits)) + j * width, vals.mean(axis=0), width, yerr=sd, label=labels.get(arm, arm), capsize=2)
    left.set_xticks(np.arange(len(splits)) + width * (len(arms) - 1) / 2, splits)
    left.set_ylabel("val mIoU (%)")
    left.set_title("per split, mean ± SD over seeds")
    left.legend(fontsize=7)
    first = {arm: min(results.runs[arm], key=lambda r: r.seed) for arm in arms}
    ref = first[arms[0]].metrics["per_class"]
    classes = [c for c in ref if c["gt_points"] > 0]
    for j, arm in enumerate(arms):
        per = {c["index"]: c["iou"] for c in first[arm].metrics["per_class"]}
        right.bar(np.arange(len(classes)) + j * width, [100 * np.nan_to_num(per[c["index"]]) for c in classes], width,
                  label=labels.get(arm, arm))
    right.set_xticks(np.arange(len(classes)) + width * (len(arms) - 1) / 2,
                     [f"{c['name']} ({c['split'][0]})" for c in classes], rotation=60, ha="right", fontsize=8)
    for tick, c in zip(right.get_xticklabels(), classes):
        tick.set_color(SPLIT_COLORS.get(c["split"], OTHER_COLOR))
    right.set_ylabel("val IoU (%)")
    right.set_title(f"per class, seed {first[arms[0]].seed} (h / c / t = head / common / tail)")
    save_figure(fig, path)


def plot_study_collapse(results: StudyResults, path: str | os.PathLike) -> None:
    """Collapse over training on the train split, mean over seeds: backbone space, CeCo's space,
    and the tail classes' classifier rows."""
    labels = _labels()
    panels = (
        (lambda rec: rec["metrics"]["overall"]["equiangular_means"], "Std cos of class means (backbone)"),
        (lambda rec: rec["metrics"].get("tail", {}).get("equiangular_means"), "Std cos of tail class means (backbone)"),
        (lambda rec: rec["center_metrics"]["overall"]["equiangular_means"], "Std cos of centers (CeCo's embedding)"),
        (lambda rec: (rec["metrics"].get("classifier_cosine") or {}).get("centered", {}).get("tail"),
         "tail classifier rows: mean cos (centered)"),
    )
    fig = new_figure(16, 3.8, layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (value, title) in zip(axes, panels):
        for arm, runs in results.runs.items():
            its = [rec["iteration"] for rec in runs[0].collapse]
            ys = np.array([[np.nan if (v := value(rec)) is None else v for rec in r.collapse] for r in runs], dtype=float)
            ax.plot(its, np.nanmean(ys, axis=0), marker="o", ms=3, label=labels.get(arm, arm))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    k = results.setting.get("num_classes", 20)
    axes[-1].axhline(-1 / (k - 1), color="gray", ls="--", lw=1, label="simplex ETF")
    axes[0].legend(fontsize=7)
    axes[-1].legend(fontsize=7)
    save_figure(fig, path)


def plot_study_lcr(results: StudyResults, path: str | os.PathLike) -> None:
    """L_CR during training of every CeCo arm (mean over seeds), with its chance and its floor."""
    labels = _labels()
    fig = new_figure(7, 4, layout="constrained")
    ax = fig.subplots()
    for i, (arm, runs) in enumerate(results.runs.items()):
        series = [{r["iteration"]: r["loss_ceco"] for r in run.log if "loss_ceco" in r} for run in runs]
        if not any(series):
            continue
        its = np.array(sorted(set.intersection(*(set(s) for s in series))))  # logged by every seed
        ys = np.array([[s[it] for it in its] for s in series]).mean(axis=0)
        color = f"C{i}"
        ax.plot(its, ys, color=color, label=labels.get(arm, arm))
        floor = results.floors.get(arm)
        if floor:
            ax.axhline(floor["chance"], color=color, ls=":", lw=1)
            ax.axhline(floor["floor"], color=color, ls="--", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("L_CR (nats)")
    ax.set_title("L_CR; dotted: chance, dashed: lowest the head can reach")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
