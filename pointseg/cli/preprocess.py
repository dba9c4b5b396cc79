"""Convert a raw ScanNet v2 release into scene folders labelled for ScanNet200 and / or ScanNet20.

    python tools/preprocess_scannet200.py --raw RAW --out DATA [--dataset NAME ...] [--workers N] [--align] [--overwrite]

``--dataset`` (repeatable; default scannet200) names the label files written: ``segment200.npy``
(scannet200), ``segment20.npy`` (scannet20); ``--dataset scannet200 --dataset scannet20`` writes
both in one pass, so one folder serves either ``data.dataset``.

Prints a summary (scenes done / skipped / failed, ignored vertices of unknown raw categories, one
line per failure, and warnings that do not fail the run: scenes with no labelled vertex, scenes
whose aggregation mostly names segment ids their segs.json lacks; stats.json lists them too); the
exit status is 1 when any scene failed, 2 when RAW is not a release, DATA cannot be written (the
summary is printed first when the scenes were done) or another run writes DATA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.cli.common import add_common, run_command
from pointseg.datasets import DEFAULT_DATASET
from pointseg.preprocessing.preprocess import RAW_DATASETS, preprocess_scannet200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", type=Path, required=True, help="ScanNet v2 folder with scans/ and scans_test/")
    p.add_argument("--out", type=Path, required=True, help="output folder DATA (DATA/<split>/<scene>/)")
    p.add_argument("--dataset", action="append", choices=RAW_DATASETS, metavar="NAME",
                   help=f"label files to write, repeatable: {', '.join(RAW_DATASETS)} (default {DEFAULT_DATASET})")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--align", action="store_true", help="apply each scene's axisAlignment")
    p.add_argument("--overwrite", action="store_true", help="redo scenes that are already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    summary = preprocess_scannet200(
        args.raw,
        args.out,
        workers=args.workers,
        align=args.align,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        datasets=tuple(args.dataset or (DEFAULT_DATASET,)),
    )
    print(summary.report())
    if summary.stats_error is not None:
        print(f"error: {summary.stats_error}", file=sys.stderr)
        return 2
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
