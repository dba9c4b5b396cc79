"""The long-tail study: does CeCo help the tail of a benchmark a CPU can learn? (``make study``)

Arms are trained with the same seeds, so that run ``s`` of every arm sees the same initial
weights, data order and augmentations, and each arm is compared with cross-entropy seed by seed
(paired differences). The decision rule of ``docs/study.md``, fixed before the runs, is applied
to them by :func:`verdict`; :func:`write_report` writes ``docs/study.md`` and its pictures from the run
folders alone, so every number in the report comes from the runs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pointseg.meta import SPLITS
from pointseg.utils.io import atomic_write_text
from pointseg.utils.plotting import OTHER_COLOR, SPLIT_COLORS, new_figure, save_figure

# arm → (config, label); "ce" is the reference every other arm is compared with.
ARMS: dict[str, tuple[str, str]] = {
    "ce": ("configs/longtail/baseline.yaml", "CE"),
    "ceco": ("configs/longtail/ceco.yaml", "CE + CeCo (released head)"),
    "ceco_paper_eq4": ("configs/longtail/ceco_paper_eq4.yaml", "CE + CeCo (paper Eq. 4, no prior)"),
    "ceco_learned_center": ("configs/longtail/ceco_learned_center.yaml", "CE + learned center classifier"),
}
REFERENCE = "ce"

@dataclass
class Run:
    """One finished training run of an arm, as the report reads it."""

    arm: str
    seed: int
    metrics: dict
    collapse: list[dict]  # records of collapse.json, in iteration order
    log: list[dict]  # log.jsonl
    confusion: np.ndarray | None = None


@dataclass
class StudyResults:
    """Every arm's runs, the L_CR floors of the CeCo arms and the study's setting (for the text)."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    floors: dict[str, dict[str, float]] = field(default_factory=dict)  # arm → {chance, floor}
    setting: dict[str, Any] = field(default_factory=dict)


def load_run(run_dir: str | os.PathLike, arm: str, seed: int) -> Run:
    """A finished run folder: its val metrics, collapse records and training log."""
    d = Path(run_dir)
    metrics = json.loads((d / "eval_val" / "metrics.json").read_text(encoding="utf-8"))
    collapse = json.loads((d / "collapse" / "collapse.json").read_text(encoding="utf-8"))["checkpoints"]
    log = [json.loads(line) for line in (d / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    conf_path = d / "eval_val" / "confusion.npz"
    confusion = np.load(conf_path, allow_pickle=False)["confusion"] if conf_path.is_file() else None
    return Run(arm, seed, metrics, sorted(collapse, key=lambda r: r["iteration"] or 0), log, confusion)


def split_miou(run: Run, split: str) -> float:
    """Val mIoU of ``split`` (head / common / tail) over the benchmark's classes of that split."""
    return float(run.metrics[f"{split}_miou"])


def final_std_cos(run: Run) -> float:
    """Std-cos of the class means (backbone features) at the last checkpoint."""
    return float(run.collapse[-1]["metrics"]["overall"]["equiangular_means"])


def _tail_cosine(record: dict) -> float | None:
    cos = record["metrics"].get("classifier_cosine")
    return None if cos is None else cos["centered"].get("tail")


def tail_classifier_cosine(run: Run) -> float | None:
    """Mean pairwise cosine of the tail classes' point-classifier rows, centered on the mean row,
    at the last checkpoint."""
    return _tail_cosine(run.collapse[-1])


def lcr_series(run: Run) -> dict[int, float]:
    """L_CR by logged iteration ({} for a run without CeCo)."""
    return {r["iteration"]: r["loss_ceco"] for r in run.log if "loss_ceco" in r}


def _label(arm: str) -> str:
    return ARMS[arm][1] if arm in ARMS else arm


def paired(a: Sequence[Run], b: Sequence[Run], value: Callable[[Run], float]) -> np.ndarray:
    """value(run of a) − value(run of b), seed by seed (over the seeds both arms have)."""
    by_seed = {r.seed: r for r in b}
    return np.array([value(r) - value(by_seed[r.seed]) for r in a if r.seed in by_seed], dtype=float)


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if x.size > 1 else float("nan")


def verdict(results: StudyResults, arm: str) -> dict[str, Any]:
    """The decision rule of ``docs/study.md`` (fixed before the runs) applied to one arm against CE:
    1. mean paired tail difference > 0 and > 2 SD of the paired tail differences;
    2. mean paired head difference >= -1 SD of the paired head differences;
    3. mean paired difference of the final Std-cos of the class means (backbone, train) < 0."""
    a, ref = results.runs[arm], results.runs[REFERENCE]
    tail = paired(a, ref, lambda r: split_miou(r, "tail"))
    head = paired(a, ref, lambda r: split_miou(r, "head"))
    std_cos = paired(a, ref, final_std_cos)
    checks = {
        "tail_gain": bool(tail.mean() > 0 and tail.mean() > 2 * _sd(tail)),
        "head_kept": bool(head.mean() >= -_sd(head)),
        "std_cos_falls": bool(std_cos.mean() < 0),
    }
    return {
        "tail": (float(tail.mean()), _sd(tail)),
        "head": (float(head.mean()), _sd(head)),
        "std_cos": (float(std_cos.mean()), _sd(std_cos)),
        "checks": checks,
        "helps": all(checks.values()),
    }


# ------------------------------------------------------------------------------ the report
def _pct(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{100 * v.mean():.1f} ± {100 * _sd(v):.1f}" if v.size > 1 else f"{100 * v.mean():.1f}"


def _signed_pct(mean_sd: tuple[float, float]) -> str:
    m, s = mean_sd
    return f"{100 * m:+.1f} ± {100 * s:.1f}"


def _num(values: Sequence[float | None], digits: int = 3) -> str:
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    if np.isnan(v).all():
        return "–"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v, ddof=1) if np.sum(~np.isnan(v)) > 1 else 0:.{digits}f}"


def lookalike_confusion(run: Run, pair: Sequence[str]) -> dict[str, dict[str, float]] | None:
    """Share of each look-alike class's val points predicted as itself and as its partner."""
    if run.confusion is None:
        return None
    names = [c["name"] for c in run.metrics["per_class"]]
    idx = [names.index(p) for p in pair]
    out = {}
    for i, j in (idx, idx[::-1]):
        total = run.confusion[i].sum()
        out[names[i]] = {
            "itself": float(run.confusion[i, i] / total) if total else math.nan,
            "partner": float(run.confusion[i, j] / total) if total else math.nan,
        }
    return out


def report_markdown(results: StudyResults, figures: dict[str, str], pair: Sequence[str]) -> str:
    """The results section of ``docs/study.md``."""
    s = results.setting
    arms = [a for a in ARMS if a in results.runs]
    lines = [
        f"Setting: {s.get('train_scenes')} train / {s.get('val_scenes')} val scenes of the long-tailed benchmark "
        f"(data seed {s.get('data_seed')}), configs `configs/longtail/<arm>.yaml`, {s.get('iterations')} iterations, "
        f"seeds {', '.join(map(str, s.get('seeds', [])))}; everything took {s.get('minutes', float('nan')):.0f} min "
        f"on {s.get('cores', 2)} CPU cores ({s.get('parallel', 1)} runs at a time, one thread each). Val mIoU in %, "
        "vertex level, by the ScanNet rule; the head / common / tail means are over the benchmark's "
        f"{s.get('class_counts', '5 / 7 / 8')} classes of each split (listed in each `metrics.json`).",
        "",
        "| arm | mIoU | head | common | tail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        runs = results.runs[arm]
        cells = [_pct([r.metrics["miou"] for r in runs])] + [_pct([split_miou(r, sp) for r in runs]) for sp in SPLITS]
        lines.append(f"| {ARMS[arm][1]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences against CE (arm − CE, same seed; mean ± SD over seeds, mIoU points) and the "
        "decision rule:",
        "",
        "| arm | head | common | tail | Δ Std-cos of class means | 1. tail gain > 2 SD | 2. head kept | 3. Std-cos falls | helps the tail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        if arm == REFERENCE:
            continue
        v = verdict(results, arm)
        common = paired(results.runs[arm], results.runs[REFERENCE], lambda r: split_miou(r, "common"))
        c = v["checks"]
        mark = {True: "yes", False: "no"}
        lines.append(
            f"| {ARMS[arm][1]} | {_signed_pct(v['head'])} | {_signed_pct((float(common.mean()), _sd(common)))} | "
            f"{_signed_pct(v['tail'])} | {v['std_cos'][0]:+.3f} ± {v['std_cos'][1]:.3f} | {mark[c['tail_gain']]} | "
            f"{mark[c['head_kept']]} | {mark[c['std_cos_falls']]} | **{mark[v['helps']]}** |"
        )
    k_measured = next(iter(results.runs.values()))[0].collapse[-1]["metrics"]["num_classes_measured"]
    lines += [
        "",
        "Neural collapse at the last checkpoint, train split (mean ± SD over seeds). Backbone features: Std-cos "
        "and Avg |cos + 1/(K−1)| of the centered class means (global mean over all points) and NC1; CeCo's "
        "center embedding: Std-cos of the embedded centers and their mean cosine to their ETF column; point "
        "classifier: mean pairwise cosine of the tail classes' rows, centered on the mean row (the ETF value is "
        f"−1/(K−1) = {-1 / (k_measured - 1):.3f} for the K = {k_measured} classes); the alignment is to "
        "each arm's own center classifier (the fixed ETF, or the learned one of its control arm).",
        "",
        "| arm | Std-cos means | Avg \\|cos + 1/(K−1)\\| | NC1 | Std-cos, center embedding | alignment to its center classifier | tail classifier cos |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        runs = results.runs[arm]
        last = [r.collapse[-1] for r in runs]
        lines.append(
            f"| {ARMS[arm][1]} | {_num([m['metrics']['overall']['equiangular_means'] for m in last])} | "
            f"{_num([m['metrics']['overall']['maxangle_means'] for m in last])} | "
            f"{_num([m['metrics']['overall']['nc1'] for m in last], 2)} | "
            f"{_num([m['center_metrics']['overall']['equiangular_means'] for m in last])} | "
            f"{_num([m['center_metrics']['overall']['alignment'] for m in last])} | "
            f"{_num([tail_classifier_cosine(r) for r in runs])} |"
        )
    lines += ["", f"The look-alike tail pair ({pair[0]} / {pair[1]}): share of each class's val points predicted as "
              "itself and as its partner (mean over seeds, %).", "",
              f"| arm | {pair[0]} → itself | {pair[0]} → {pair[1]} | {pair[1]} → itself | {pair[1]} → {pair[0]} |",
              "| --- | --- | --- | --- | --- |"]
    for arm in arms:
        conf = [lookalike_confusion(r, pair) for r in results.runs[arm]]
        conf = [c for c in conf if c]
        if not conf:
            continue
        cell = lambda a, k: f"{100 * np.mean([c[a][k] for c in conf]):.1f}"  # noqa: E731
        lines.append(f"| {ARMS[arm][1]} | {cell(pair[0], 'itself')} | {cell(pair[0], 'partner')} | "
                     f"{cell(pair[1], 'itself')} | {cell(pair[1], 'partner')} |")
    if results.floors:
        lines += ["", "L_CR of each CeCo arm next to what its head allows on these classes (free centers through its "
                  "frozen maps, with its prior; `pointseg.analysis.ceco_floor`):", "",
                  "| arm | chance | lowest reachable | first 50 iterations | last 50 iterations |", "| --- | --- | --- | --- | --- |"]
        for arm in arms:
            if arm not in results.floors:
                continue
            f = results.floors[arm]
            series = [lcr_series(run) for run in results.runs[arm]]
            end = max(it for x in series for it in x)
            first = np.mean([np.mean([v for it, v in x.items() if it <= 50]) for x in series if x])
            last = np.mean([np.mean([v for it, v in x.items() if it > end - 50]) for x in series if x])
            lines.append(f"| {ARMS[arm][1]} | {f['chance']:.2f} | {f['floor']:.2f} | {first:.2f} | {last:.2f} |")
    for title, path in figures.items():
        lines += ["", f"![{title}]({path})"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the figures
def plot_study_bars(results: StudyResults, path: str | os.PathLike) -> None:
    """Per-split val mIoU of every arm (mean ± SD over seeds) and per-class IoU of the first seed."""
    arms = list(results.runs)
    fig = new_figure(15, 4.5, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 3])
    splits = SPLITS
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        vals = np.array([[split_miou(r, s) for s in splits] for r in results.runs[arm]]) * 100
        sd = vals.std(axis=0, ddof=1) if len(vals) > 1 else np.zeros(len(splits))
        left.bar(np.arange(len(splits)) + j * width, vals.mean(axis=0), width, yerr=sd, label=_label(arm), capsize=2)
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
                  label=_label(arm))
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
    panels = (
        (lambda rec: rec["metrics"]["overall"]["equiangular_means"], "Std cos of class means (backbone)"),
        (lambda rec: rec["metrics"].get("tail", {}).get("equiangular_means"), "Std cos of tail class means (backbone)"),
        (lambda rec: rec["center_metrics"]["overall"]["equiangular_means"], "Std cos of centers (CeCo's embedding)"),
        (_tail_cosine, "tail classifier rows: mean cos (centered)"),
    )
    fig = new_figure(16, 3.8, layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (value, title) in zip(axes, panels):
        for arm, runs in results.runs.items():
            its = [rec["iteration"] for rec in runs[0].collapse]
            ys = np.array([[np.nan if (v := value(rec)) is None else v for rec in r.collapse] for r in runs], dtype=float)
            ax.plot(its, np.nanmean(ys, axis=0), marker="o", ms=3, label=_label(arm))
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
    fig = new_figure(7, 4, layout="constrained")
    ax = fig.subplots()
    for i, (arm, runs) in enumerate(results.runs.items()):
        series = [lcr_series(run) for run in runs]
        if not any(series):
            continue
        its = np.array(sorted(set.intersection(*(set(s) for s in series))))  # logged by every seed
        ys = np.array([[s[it] for it in its] for s in series]).mean(axis=0)
        color = f"C{i}"
        ax.plot(its, ys, color=color, label=_label(arm))
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


BEGIN, END = "<!-- study results: begin (written by tools/study.py) -->", "<!-- study results: end -->"


def merge_into_doc(doc: str | os.PathLike, generated: str) -> None:
    """Replace the results block of ``doc``; the decision rule and the reading around it are kept."""
    doc = Path(doc)
    block = f"{BEGIN}\n{generated}\n{END}"
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        text = old + ("\n\n" if old else "") + block + "\n"
    atomic_write_text(doc, text)


def write_report(results: StudyResults, doc: str | os.PathLike, pair: Sequence[str]) -> Path:
    """Pictures under ``<doc folder>/study/`` and the results block of ``doc``."""
    doc = Path(doc)
    fig_dir = doc.parent / "study"
    figures = {
        "per-split mIoU and per-class IoU": "study/per_class_iou.png",
        "collapse over training": "study/collapse_curves.png",
        "L_CR over training": "study/lcr_curves.png",
    }
    plot_study_bars(results, fig_dir / "per_class_iou.png")
    plot_study_collapse(results, fig_dir / "collapse_curves.png")
    plot_study_lcr(results, fig_dir / "lcr_curves.png")
    merge_into_doc(doc, report_markdown(results, figures, pair))
    return doc


def compute_floors(
    data_root: str | os.PathLike, classes: Sequence[int] | None, configs: dict[str, str], steps: int = 1000
) -> dict[str, dict[str, float]]:
    """Chance and lowest reachable L_CR of each CeCo arm (arm → its config) on the benchmark's
    classes, with the prior each arm's head uses (``pointseg.analysis.ceco_floor``)."""
    from pointseg.analysis.ceco_floor import chance_loss, lowest_center_loss
    from pointseg.engine.config import load_config
    from pointseg.losses.ceco import CenterCollapseLoss
    from pointseg.models import build_backbone

    out = {}
    for arm, config in configs.items():
        cfg = load_config(config, [f"data.root={data_root}"])
        if not cfg.ceco.enabled:
            continue
        feature_dim = build_backbone(cfg.model.name, cfg.model.in_channels, "torch").feature_dim
        branch = CenterCollapseLoss.from_config(cfg.ceco, feature_dim, cfg.model.num_classes, data_root)
        nonnegative = branch.reduce is None  # pooling post-ReLU backbone features directly
        out[arm] = {
            "chance": chance_loss(branch, classes),
            "floor": lowest_center_loss(branch, classes, nonnegative=nonnegative, use_prior=True, steps=steps),
        }
    return out


__all__ = [
    "ARMS", "REFERENCE", "Run", "StudyResults", "compute_floors", "load_run", "merge_into_doc", "paired",
    "report_markdown", "verdict", "write_report",
]
