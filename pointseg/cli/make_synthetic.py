"""Write a synthetic ScanNet v2 release: procedural rooms with ScanNet200's long tail.

    python tools/make_synthetic_scannet.py --out RAW --train 100 --val 20 --test 10 --seed 0 [--vertices 40000] [--workers W]

RAW gets scans/ (train + val, annotated), scans_test/ (mesh and .txt only),
scannetv2_{train,val,test}.txt, ground_truth/<scene>.npy (true ScanNet200 id per vertex, 0 =
unlabelled) and synthetic_summary.json (point- and center-level imbalance factors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.cli.common import add_common, run_command
from pointseg.synthetic import generate_synthetic_scannet


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder (raw ScanNet layout)")
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vertices", type=int, default=40000, help="mean vertices per scene (150000 ~ ScanNet size)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--no-progress", action="store_true")
    add_common(ap)
    args = ap.parse_args(argv)
    s = generate_synthetic_scannet(
        args.out, args.train, args.val, args.test, args.seed, args.vertices, args.workers, not args.no_progress
    )
    print(
        f"{sum(s['scenes'].values())} scenes in {args.out} (mean {s['mean_vertices']:.0f} vertices); "
        f"train: {s['train_classes_present']}/200 classes, point imbalance {s['point_imbalance_factor']:.0f}, "
        f"center imbalance {s['center_imbalance_factor']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
