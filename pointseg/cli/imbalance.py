"""Class imbalance of the train split at point and center level (CeCo §4.3).

    python tools/imbalance.py --data DATA [--metrics RUN/metrics.json] --out DIR

Writes ``DIR/imbalance.json`` and ``DIR/imbalance.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pointseg.analysis.imbalance import analyze_imbalance, load_class_counts, read_class_accuracy
from pointseg.analysis.plots import plot_imbalance
from pointseg.cli.common import add_common, run_command
from pointseg.utils.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="preprocessed dataset root (DATA/train/<scene>/)")
    ap.add_argument("--split", default="train", help="split whose counts are analysed (default: train)")
    ap.add_argument("--metrics", type=Path, help="metrics.json of an evaluation, for accuracy correlations")
    ap.add_argument("--out", required=True, type=Path)
    add_common(ap)
    args = ap.parse_args(argv)

    counts = load_class_counts(args.data, args.split)
    accuracy = read_class_accuracy(args.metrics) if args.metrics else None
    result = analyze_imbalance(counts, accuracy)
    if args.metrics:
        result["metrics"] = str(args.metrics)
    atomic_write_text(args.out / "imbalance.json", json.dumps(result, indent=1) + "\n")
    plot_imbalance(result, args.out / "imbalance.png")

    print(f"counts from {counts.source}")
    print(f"classes present: {result['num_classes_present']}")
    print(f"imbalance factor: points {_fmt(result['point_imbalance_factor'])}, "
          f"centers {_fmt(result['center_imbalance_factor'])}")
    corr = result.get("accuracy_correlation")
    if corr:
        for key in ("points", "centers"):
            for scale in ("raw", "log10"):
                c = corr[key][scale]
                r = "n/a" if c["r"] is None else f"{c['r']:+.3f} (p={c['p']:.2g})"
                print(f"pearson r(acc, {scale} {key}) over {c['n']} classes: {r}")
    print(f"wrote {args.out / 'imbalance.json'} and {args.out / 'imbalance.png'}")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


if __name__ == "__main__":
    sys.exit(main())
