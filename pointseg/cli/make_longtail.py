"""Write the long-tailed CPU benchmark (pointseg.synthetic.longtail) in the raw ScanNet layout.

    python tools/make_longtail_scannet.py --out RAW [--preset v1|compact] [--train 150 --val 60 --test 10] [--seed 0]

20 ScanNet200 classes (5 head, 7 common, 8 tail, one look-alike tail pair), every object at least
--min-thickness-voxels voxels of --voxel-size thick, a long-tailed train split and balanced
val / test splits. Smaller --train / --val / --test give a demo-sized version with the same class
shares. Then: tools/preprocess_scannet200.py --raw RAW --out data/longtail.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pointseg.cli.common import add_common, run_command
from pointseg.synthetic.longtail import DEFAULT_SCENES, PRESETS, BenchmarkConfig, generate_longtail


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder (raw ScanNet layout)")
    for split, n in DEFAULT_SCENES.items():
        ap.add_argument(f"--{split}", type=int, default=n, help=f"{split} scenes (default {n})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=list(PRESETS), default="v1",
                    help="room sizes: v1 (the first study's) or compact (smaller rooms, the second study's)")
    ap.add_argument("--voxel-size", type=float, default=BenchmarkConfig.voxel_size, help="training voxel size, metres")
    ap.add_argument("--min-thickness-voxels", type=int, default=BenchmarkConfig.min_thickness_voxels,
                    help="every object spans at least this many voxels along each axis (checked)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--no-progress", action="store_true")
    add_common(ap)
    args = ap.parse_args(argv)
    config = dataclasses.replace(PRESETS[args.preset], voxel_size=args.voxel_size,
                                 min_thickness_voxels=args.min_thickness_voxels)
    s = generate_longtail(args.out, args.train, args.val, args.test, args.seed, args.workers,
                          not args.no_progress, config)
    print(
        f"{sum(s['scenes'].values())} scenes in {args.out} (mean {s['mean_vertices']:.0f}, max {s['max_vertices']} "
        f"vertices); {len(s['classes'])} classes; generator counts: point imbalance "
        f"{s['point_imbalance_factor']:.0f}, center imbalance {s['center_imbalance_factor']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
