"""The CeCo-vs-baseline study on synthetic scenes (`make study`), on CPU.

Trains the synthetic configs of the baseline (CE), CeCo and CeCo + Lovász with several seeds on
one synthetic ScanNet, evaluates each on val, runs the neural-collapse diagnostics on each run's
snapshots and writes a report (`docs/study.md`) with mean ± std tables and plots. Every number in
the report comes from the runs this command makes.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from steps import ROOT, run, tool  # noqa: E402  (tools/steps.py)

from pointseg.utils.io import atomic_write_text  # noqa: E402

step = functools.partial(run, job="study")

METHODS = {"baseline": "CE (baseline)", "ceco": "CE + CeCo", "ceco_lovasz": "CE + Lovász + CeCo"}
SPLIT_KEYS = ("miou", "head_miou", "common_miou", "tail_miou", "miou_absent_as_zero")
COLLAPSE_KEYS = ("equiangular_means", "maxangle_means", "equiangular_classifier", "maxangle_classifier", "nc1")


def mean_std(values: list[float | None]) -> str:
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return "–"
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1 if v.size > 1 else 0):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("outputs/study"))
    ap.add_argument("--doc", type=Path, default=Path("docs/study.md"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--snapshot-every", type=int, default=100, help="snapshots for the collapse curves")
    ap.add_argument("--collapse-scenes", type=int, default=10, help="val scenes for the collapse metrics")
    ap.add_argument("--train-scenes", type=int, default=100)
    ap.add_argument("--val-scenes", type=int, default=20)
    ap.add_argument("--data-seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out if args.out.is_absolute() else ROOT / args.out
    doc = args.doc if args.doc.is_absolute() else ROOT / args.doc
    raw, data = out / "raw", out / "data"
    start = time.perf_counter()

    if not (data / "stats.json").exists():
        step(tool("make_synthetic_scannet", "--out", raw, "--train", args.train_scenes, "--val", args.val_scenes,
                 "--test", 1, "--seed", args.data_seed))
        step(tool("preprocess_scannet200", "--raw", raw, "--out", data, "--workers", 2))

    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for method in args.methods:
        for seed in args.seeds:
            run_dir = out / "runs" / f"{method}_seed{seed}"
            ckpt = run_dir / "checkpoints" / "last.pth"
            if not ckpt.exists():
                step(tool("train", "--config", f"configs/synthetic/{method}.yaml", "--out", run_dir,
                         f"data.root={data}", f"train.iterations={args.iterations}", f"seed={seed}",
                         f"train.snapshot_every={args.snapshot_every}"))
            ev = run_dir / "eval_val"
            if not (ev / "metrics.json").exists():
                step(tool("test", "--config", run_dir / "config.yaml", "--checkpoint", ckpt, "--split", "val",
                         "--out", ev, f"data.root={data}"))
            snaps = sorted((run_dir / "checkpoints").glob("iter_*.pth")) or [ckpt]
            col = run_dir / "collapse"
            if not (col / "collapse.json").exists():
                step(tool("collapse", "--checkpoint", *snaps, "--split", "val", "--out", col,
                         "--max-scenes", args.collapse_scenes, f"data.root={data}"))
            results[method].append({
                "seed": seed,
                "metrics": json.loads((ev / "metrics.json").read_text()),
                "collapse": json.loads((col / "collapse.json").read_text()),
            })

    # Minutes of work behind the results, summed over invocations (a rerun skips finished steps).
    timing = out / "timing.json"
    total = json.loads(timing.read_text())["minutes"] if timing.exists() else 0.0
    total += (time.perf_counter() - start) / 60
    atomic_write_text(timing, json.dumps({"minutes": total}) + "\n")
    write_report(results, args, doc, out, total)


def _final_collapse(entry: dict) -> dict:
    return entry["collapse"]["checkpoints"][-1]["metrics"]["overall"]


BEGIN, END = "<!-- study results: begin (written by tools/study.py) -->", "<!-- study results: end -->"


def _merge_report(generated: str, doc: Path) -> str:
    """The report with fresh numbers; the hand-written reading of an existing report is kept."""
    block = f"{BEGIN}\n{generated}\n{END}"
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if BEGIN in old and END in old:
        return old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    return block + "\n\n## Reading the numbers\n\n(to be written from the numbers above)\n"


def write_report(results: dict, args, doc: Path, out: Path, minutes: float) -> None:
    fig_dir = doc.parent / "study"
    fig_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# CeCo vs. baseline on synthetic ScanNet",
        "",
        "Produced by:",
        "",
        "```bash",
        "make study   # = python tools/study.py --out outputs/study --doc docs/study.md",
        "```",
        "",
        f"Setting: {args.train_scenes} train / {args.val_scenes} val synthetic scenes (data seed {args.data_seed}), "
        f"configs `configs/synthetic/<method>.yaml`, {args.iterations} iterations each, seeds "
        f"{', '.join(map(str, args.seeds))}; 2 CPU cores; all steps together took {minutes:.0f} min of wall time. Val mIoU over the "
        "classes present in val ground truth or predictions (ScanNet rule), mean ± std over seeds, in %.",
        "",
        "| method | mIoU | head | common | tail | mIoU (absent = 0) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, runs in results.items():
        cells = [mean_std([r["metrics"][k] for r in runs]) for k in SPLIT_KEYS]
        lines.append(f"| {METHODS.get(method, method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Neural-collapse metrics of the last checkpoint on val features (mean over seeds; lower is closer "
        "to a simplex ETF): equiangular = Std cos(ẑ_k, ẑ_k'), maxangle = Avg |cos + 1/(K−1)|, for "
        "class means and classifier vectors, and NC1 = Tr(Σ_W Σ_B⁺)/K.",
        "",
        "| method | " + " | ".join(COLLAPSE_KEYS) + " |",
        "| --- |" + " --- |" * len(COLLAPSE_KEYS),
    ]
    for method, runs in results.items():
        vals = [np.nanmean([_final_collapse(r).get(k, np.nan) or np.nan for r in runs]) for k in COLLAPSE_KEYS]
        lines.append(f"| {METHODS.get(method, method)} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, runs in results.items():
        for ax, key in zip(axes, ("equiangular_means", "maxangle_means")):
            curves = [[c["metrics"]["overall"].get(key) for c in r["collapse"]["checkpoints"]] for r in runs]
            its = [c["iteration"] for c in runs[0]["collapse"]["checkpoints"]]
            ax.plot(its, np.nanmean(np.array(curves, dtype=float), axis=0), marker="o", label=METHODS.get(method, method))
            ax.set_title(key)
            ax.set_xlabel("iteration")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(fig_dir / "collapse_curves.png", dpi=100)
    plt.close(fig)
    lines += ["", "![collapse curves](study/collapse_curves.png)", ""]
    atomic_write_text(doc, _merge_report("\n".join(lines), doc))
    print(f"\nwrote {doc}")


if __name__ == "__main__":
    main()
