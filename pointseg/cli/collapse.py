"""Neural-collapse diagnostics of trained checkpoints (CeCo paper, Figures 2 and 4).

    python tools/collapse.py --checkpoint RUN/checkpoints/iter_*.pth --out DIR [--split train] [key=value ...]

For each checkpoint, as the paper defines them (§3.1, Fig. 2 and 4): class means of the decoder
features over the split (train by default, as in Fig. 2), centered by the mean of all points and
normalized, the normalized classifier rows, their equiangularity / maximal-angle metrics (shift
1/(K-1), K the number of classes measured) and NC1, overall and per head / common / tail; and the
same angles in CeCo's normalized center embedding. Writes ``DIR/collapse.json`` and
``DIR/collapse.png``. ``--config`` takes the data settings from a config file instead of the
checkpoint's stored config. ``--weighting class`` weighs every class alike (the global mean and
Σ_W over class means, not dominated by the head classes); ``--split val`` measures the features of
scenes the model did not train on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.analysis.collapse import METRIC_NAMES, WEIGHTINGS
from pointseg.analysis.collapse_run import analyze_checkpoint, write_collapse_report
from pointseg.cli.common import add_common, parse_with_overrides, run_command

GROUPS = ("overall", "head", "common", "tail")


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="config whose data section is used (default: the checkpoint's)")
    ap.add_argument("--checkpoint", required=True, nargs="+", type=Path, help="checkpoints, in training order")
    ap.add_argument("--split", default="train", choices=("train", "val"), help="default train (paper Fig. 2)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weighting", default="point", choices=WEIGHTINGS,
                    help="global mean and Σ_W over all points (default, the paper's) or over class means")
    ap.add_argument("--max-scenes", type=int, help="use only the first N scenes of the split")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    add_common(ap)
    args = parse_with_overrides(ap, argv)

    data_cfg = None
    if args.config is not None:
        from pointseg.engine.config import load_config

        data_cfg = load_config(args.config, args.overrides).data
    records = []
    for ckpt in args.checkpoint:
        rec = analyze_checkpoint(
            ckpt, args.split, args.overrides, args.device, args.max_scenes, data_cfg=data_cfg, weighting=args.weighting
        )
        records.append(rec)
        print(_summary(rec))
    json_path, png_path = write_collapse_report(records, args.out)
    print(f"wrote {json_path} and {png_path}")
    return 0


def _summary(rec: dict) -> str:
    m = rec["metrics"]
    k = m["num_classes_measured"]
    lines = [
        f"{rec['checkpoint']} (iteration {rec['iteration']}, {rec['split']} split, K = {k} classes "
        f"measured, ETF cosine -1/(K-1) = {m['etf_cosine']:.4f}, global mean over {m['weighting']}s)"
    ]
    spaces = (("backbone features", m), ("the run's own center embedding", rec.get("center_metrics")),
              ("the released head's center embedding (shared by every run)", rec.get("center_metrics_shared")))
    for title, metrics in spaces:
        if not metrics:
            continue
        etf = metrics.get("num_classes_etf")  # the center embedding's target is the ETF of all its classes
        lines.append(f"  {title}" + (f" (shift of the ETF of K = {etf} classes: {metrics['etf_cosine']:.4f})" if etf else ""))
        lines.append(f"  {'group':8s}" + "".join(f"{n:>24s}" for n in METRIC_NAMES))
        for g in GROUPS:
            if g in metrics:
                vals = ("n/a" if metrics[g][n] is None else f"{metrics[g][n]:.4f}" for n in METRIC_NAMES)
                lines.append(f"  {g:8s}" + "".join(f"{v:>24s}" for v in vals))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
