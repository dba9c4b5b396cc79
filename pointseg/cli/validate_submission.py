"""Check a submission zip (ScanNet200, or ``--dataset scannet20``) against the raw meshes before
uploading it.

Checks one ``<scene>.txt`` per scene of the split at the zip root, as many lines as the scene's
``<scene>_vh_clean_2.ply`` has vertices (read from the PLY header only), and a valid class id of
the dataset (ScanNet id for ScanNet200, NYU40 id for ScanNet v2's 20 classes) on every line. Prints every problem with its scene; the exit status is 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys

from pointseg.cli.common import add_common, run_command
from pointseg.datasets import DATASETS, DEFAULT_DATASET
from pointseg.evaluation.submission import raw_vertex_counts, validate_submission


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zip", help="submission.zip")
    parser.add_argument("--raw", required=True, help="raw ScanNet v2 folder (scans/, scans_test/)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS), help="benchmark (default scannet200)")
    add_common(parser)
    args = parser.parse_args(argv)
    expected, problems = raw_vertex_counts(args.raw, args.split)
    problems += validate_submission(args.zip, expected, DATASETS[args.dataset])
    for p in problems:
        print(f"error: {p}")
    if problems:
        print(f"{args.zip}: INVALID, {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.zip}: valid submission for {len(expected)} {args.split} scenes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
