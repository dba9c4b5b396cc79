"""Segment your own scans with nothing but a checkpoint: any point cloud or mesh, any size.

    pointseg-predict room.ply --checkpoint best.pth --out segmented/
    pointseg-predict phone_scan.ply lidar.laz --checkpoint a.pth --checkpoint b.pth --out seg/ \\
        --up y --units mm --tta 4 --format ply --max-voxels 200000

Reads PLY (a point cloud or a mesh's vertices), NPY (N×3 or N×6), TXT / XYZ (``x y z [r g b]``),
and PCD, LAS and LAZ with the ``scans`` extra (``pip install 'pointseg[scans]'``); colours as
0–255 integers or 0–1 floats. ``--up y`` and ``--units cm|mm`` bring a scan to ScanNet's z-up
metres; a scan without colour needs ``--no-color`` when the model reads colour (every point
then gets a neutral mid-grey, and accuracy suffers). Points with NaN / inf coordinates are
dropped and counted.

The voxel size, input features, normalisation and label space come from the checkpoint; several
checkpoints vote as an ensemble, ``--tta`` adds rotations, as in ``pointseg-test``. Every point
takes its voxel's prediction (``pointseg-test --no-fragments``); a scan of more than
``--max-voxels`` voxels is predicted in spatial chunks of at most that many, overlapping by
``--overlap`` metres, whose votes are averaged where they overlap.

Writes ``OUT/<scan>.labels.<ply|npy|txt>``: the scan's points in their order, coordinates and
units, with ``label`` (the ScanNet id of the class, as a benchmark submission has it; 0 for a
dropped point) and the class colour; and ``OUT/summary.json`` with the points of each class.
Inputs are never modified; outputs are written atomically. A scan that fails is reported in one
line and the others go on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pointseg.cli.common import USER_ERRORS, add_common, parse_with_overrides, run_command
from pointseg.data.scan_frame import UNITS_PER_METRE, UP_AXES
from pointseg.data.scan_io import WRITE_FORMATS, Scan, output_path, read_scan, write_labelled_scan
from pointseg.engine.predictor import Predictor, class_counts, load_predictor, scan_input, scannet_labels
from pointseg.evaluation.chunks import predict_chunked
from pointseg.evaluation.inference import tta_views
from pointseg.evaluation.label_map import read_label_map
from pointseg.utils.errors import one_line
from pointseg.utils.io import atomic_write_text

SUMMARY = "summary.json"
# About two ScanNet rooms at 2 cm: one forward of MinkUNet34C at this size fits a few GB.
DEFAULT_MAX_VOXELS = 300_000
DEFAULT_OVERLAP_M = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scans", nargs="+", metavar="SCAN", help="scan files (.ply .npy .txt .xyz .pcd .las .laz)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help="a checkpoint; repeat for an ensemble")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--format", default="ply", choices=WRITE_FORMATS, help="output file format (default ply)")
    p.add_argument("--up", default="z", choices=UP_AXES, help="the scan's up axis (ScanNet: z)")
    p.add_argument("--units", default="m", choices=tuple(UNITS_PER_METRE), help="the scan's units (ScanNet: m)")
    p.add_argument("--no-color", action="store_true",
                   help="predict a scan without colour with a model trained with colour (neutral grey; less accurate)")
    p.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS,
                   help=f"voxels of one forward pass: the memory bound (default {DEFAULT_MAX_VOXELS})")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_M,
                   help=f"metres by which chunks overlap (default {DEFAULT_OVERLAP_M})")
    p.add_argument("--tta", type=int, default=1, help="rotations about z, evenly spaced (1 = none)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], help="scales per rotation")
    p.add_argument("--config", help="the training config, for a checkpoint whose stored config lacks what prediction needs")
    p.add_argument("--label-map", metavar="FILE.json",
                   help='a model of another label set: {"<model class index>": <ScanNet200 class index>, ...}')
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--show", action="store_true", help="open each result in the open3d viewer (pointseg[viz])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. model.backend=torch)")
    add_common(p)
    args = parse_with_overrides(p, argv)
    if args.max_voxels < 1:
        p.error(f"--max-voxels must be positive, got {args.max_voxels}")
    if args.overlap < 0:
        p.error(f"--overlap must be >= 0, got {args.overlap}")
    return args


def plan_outputs(scans: list[Path], out_dir: Path, fmt: str) -> dict[Path, Path]:
    """Output file of each scan; two scans writing one file, or an output that is an input, is an
    error before anything runs."""
    outputs: dict[Path, Path] = {}
    inputs = {s.resolve() for s in scans}
    for scan in scans:
        out = output_path(out_dir, scan, fmt)
        clash = next((s for s, o in outputs.items() if o == out), None)
        if clash is not None:
            raise ValueError(f"{scan}: would write {out}, as {clash} does; predict them into separate --out folders")
        if out.resolve() in inputs:
            raise ValueError(f"{scan}: its output {out} is an input scan; choose another --out")
        outputs[scan] = out
    return outputs


def predict_file(
    scan_path: Path, out: Path, predictor: Predictor, args: argparse.Namespace, views: list
) -> tuple[dict, Scan, np.ndarray]:
    """Read, predict and write one scan: its ``summary.json`` entry, the scan and its class colours."""
    start = time.perf_counter()
    scan = read_scan(scan_path)
    prepared = scan_input(scan, predictor, args.up, args.units, args.no_color)
    overlap = round(args.overlap / predictor.voxel_size)
    result = predict_chunked(
        predictor.models, prepared.data, predictor.transforms, predictor.voxel_size, views,
        predictor.num_classes, args.max_voxels, overlap, args.device,
        progress=not args.no_progress, desc=scan_path.name,
    )
    ids, colors = scannet_labels(predictor, result.label, prepared.keep)
    write_labelled_scan(out, scan, ids, colors, args.format)
    entry = {
        "output": str(out),
        "points": scan.num_points,
        "dropped_non_finite": prepared.dropped,
        "color": "none: neutral grey" if prepared.neutral_color else scan.color_encoding,
        "units_warning": prepared.units_warning,
        "voxels": result.num_voxels,
        "chunks": result.num_chunks,
        "largest_chunk_voxels": result.largest_chunk,
        "seconds": round(time.perf_counter() - start, 3),
        "classes": class_counts(ids, predictor.spec),
    }
    return entry, scan, colors


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scans = [Path(s) for s in args.scans]
    outputs = plan_outputs(scans, args.out, args.format)
    label_map = read_label_map(args.label_map) if args.label_map else None
    predictor = load_predictor(args.checkpoint, args.config, args.overrides, label_map, args.device)
    views = tta_views(args.tta, args.tta_scales)
    summary: dict = {
        "checkpoints": [str(c) for c in args.checkpoint],
        "voxel_size": predictor.voxel_size,
        "features": predictor.features,
        "tta_views": len(views),
        "up": args.up,
        "units": args.units,
        "max_voxels": args.max_voxels,
        "overlap_m": args.overlap,
        "scans": {},
        "failed": {},
    }
    print(f"{len(scans)} scan(s), {len(predictor.models)} model(s), {len(views)} view(s), "
          f"voxel {predictor.voxel_size} m, input {'+'.join(predictor.features)}, device {args.device}")
    for scan_path in scans:
        try:
            entry, scan, colors = predict_file(scan_path, outputs[scan_path], predictor, args, views)
        except USER_ERRORS as e:  # this scan is reported, the others go on
            summary["failed"][str(scan_path)] = one_line(e)
            print(f"error: {one_line(e)}", file=sys.stderr)
        else:
            summary["scans"][str(scan_path)] = entry
            top = ", ".join(f"{c['name']} {c['points']}" for c in entry["classes"][:3])
            print(f"written: {entry['output']} ({entry['points']} points, {entry['chunks']} chunk(s); {top})")
        atomic_write_text(args.out / SUMMARY, json.dumps(summary, indent=2) + "\n")
        if args.show and str(scan_path) in summary["scans"]:
            _show(scan, colors, entry["output"])
    print(f"written: {args.out / SUMMARY}")
    failed = len(summary["failed"])
    if failed:
        print(f"{failed} of {len(scans)} scans failed", file=sys.stderr)
    return 1 if failed else 0


def _show(scan: Scan, colors: np.ndarray, title: str) -> None:
    """The scan in the open3d viewer, in its class colours; no viewer or display is one line."""
    from pointseg.analysis.visualize import show_open3d

    try:
        show_open3d(scan.coord, {title: colors})
    except RuntimeError as e:
        print(f"warning: {one_line(e)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
