"""Coloured PLY point clouds and a PNG of a scene: ground truth, prediction and error map.

    python tools/visualize.py --data DATA --split val --scene SCENE \
        [--predictions RUN/predictions | --checkpoint CKPT [--config CFG]] --out DIR [--show]

Predictions come from a folder of submission-format ``<scene>.txt`` files (one ScanNet200 id per
vertex) or from a checkpoint. Writes ``DIR/<scene>_{gt,pred,error}.ply`` and ``DIR/<scene>.png``
(no display needed); ``--show`` also opens an open3d window (``pip install 'pointseg[viz]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.analysis.visualize import (
    VIEWS,
    error_colors,
    label_colors,
    load_scene_labels,
    predict_vertices,
    read_predictions_txt,
    show_open3d,
    write_scene_outputs,
)
from pointseg.cli.common import add_common, parse_with_overrides, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="preprocessed dataset root")
    ap.add_argument("--split", default="val")
    ap.add_argument("--scene", required=True)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--predictions", type=Path, help="folder of <scene>.txt prediction files")
    src.add_argument("--checkpoint", type=Path, help="predict with this checkpoint")
    ap.add_argument("--config", type=Path, help="with --checkpoint: take the data settings from this config (default: the checkpoint's)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--view", default="top", choices=VIEWS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--show", action="store_true", help="open an interactive open3d window")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (with --checkpoint)")
    add_common(ap)
    args = parse_with_overrides(ap, argv)

    coord, gt = load_scene_labels(args.data, args.split, args.scene)
    pred = None
    if args.predictions is not None:
        pred = read_predictions_txt(args.predictions / f"{args.scene}.txt", len(coord))
    elif args.checkpoint is not None:
        data_cfg = None
        if args.config is not None:
            from pointseg.engine.config import load_config

            data_cfg = load_config(args.config, args.overrides).data
        pred = predict_vertices(
            args.checkpoint, args.data, args.split, args.scene, args.overrides, args.device, data_cfg
        )
    if gt is None and pred is None:
        raise ValueError(f"{args.data / args.split / args.scene}: no labels and no predictions to show")
    written = write_scene_outputs(args.out, args.scene, coord, gt, pred, view=args.view)
    for kind, path in written.items():
        print(f"{kind:6s} {path}")
    if args.show:
        colorings = {}
        if gt is not None:
            colorings["ground truth"] = label_colors(gt)
        if pred is not None:
            colorings["prediction"] = label_colors(pred)
        if gt is not None and pred is not None:
            colorings["errors"] = error_colors(gt, pred)
        try:
            show_open3d(coord, colorings)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
