"""Evaluate checkpoints on a split by the benchmark's rules of its dataset (``data.dataset``,
ScanNet200 by default), or write a test submission.

    python tools/test.py --checkpoint runs/x/checkpoints/best.pth --split val --out outputs/val
    python tools/test.py --config configs/scannet200/ceco.yaml --checkpoint a.pth b.pth c.pth \\
        --split test --tta 4 --raw /data/scannet --out outputs/test  [key=value ...]

Every vertex is predicted from its own voxel representative (test-mode fragments); ``--tta N``
adds N rotations about z (and ``--tta-scales``), several checkpoints form an ensemble; all vote
by averaging class probabilities. Labelled splits write metrics.json, confusion.npz and
per_class_iou.png (together, and only when a labelled point was scored: a failed evaluation leaves
an earlier one in OUT as it was); the test split writes submission.zip and validates it. OUT is
checked for writability before the first scene is predicted. Under torchrun the
scenes are split over processes. The exit status is 1 if any scene failed or the submission is
invalid. A checkpoint of another label set than ScanNet200's (e.g. 20 classes) is refused unless
``--label-map FILE.json`` ({"<model class index>": <ScanNet200 class index>, ...}) maps it.
``--logit-adjust TAU`` (post-hoc logit adjustment by the training class prior) and ``--tau-norm
TAU`` (τ-normalized point classifier) correct any checkpoint for the long tail without training
(``pointseg.evaluation.posthoc``); metrics.json records them and the prior used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.cli.common import add_common, parse_with_overrides, run_command
from pointseg.data.dataset import build_dataset
from pointseg.data.stats import COUNT_KINDS
from pointseg.datasets import spec_of
from pointseg.engine.distributed import cleanup, init_distributed
from pointseg.engine.ensemble import load_ensemble
from pointseg.evaluation.inference import tta_views
from pointseg.evaluation.label_map import read_label_map
from pointseg.evaluation.posthoc import LogitAdjust, TauNorm, posthoc_models, read_prior
from pointseg.evaluation.report import format_table
from pointseg.evaluation.tester import evaluate_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config for the data (default: the first checkpoint's config)")
    p.add_argument("--checkpoint", nargs="+", required=True, help="one checkpoint, or several for an ensemble")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tta", type=int, default=1, help="rotations about z, evenly spaced (1 = none)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], help="scales per rotation")
    p.add_argument("--no-fragments", action="store_true",
                   help="one forward per view, each vertex takes its voxel's prediction (faster)")
    p.add_argument("--save-predictions", action="store_true", help="write OUT/predictions/<scene>.txt")
    p.add_argument("--raw", help="raw ScanNet folder: validate the submission against the mesh headers")
    p.add_argument(
        "--label-map",
        metavar="FILE.json",
        help='score a model of another label set: {"<model class index>": <ScanNet200 class index>, ...}',
    )
    p.add_argument("--logit-adjust", type=float, metavar="TAU",
                   help="subtract TAU·log p_k (training class prior) from the logits (Menon et al., ICLR 2021)")
    p.add_argument("--prior", metavar="STATS.json",
                   help="prior of --logit-adjust from this stats.json (default: the config's data.root)")
    p.add_argument("--prior-by", choices=COUNT_KINDS, default="points",
                   help="prior of --logit-adjust from the training points (default) or scenes per class")
    p.add_argument("--tau-norm", type=float, metavar="TAU",
                   help="point-classifier rows w_k / ||w_k||^TAU (Kang et al., ICLR 2020)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=/data/scannet200)")
    add_common(p)
    return parse_with_overrides(p, argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    dist_info = init_distributed(args.device)
    try:
        label_map = read_label_map(args.label_map) if args.label_map else None
        models, cfg = load_ensemble(args.checkpoint, args.overrides, args.config, dist_info.device, label_map)
        models, posthoc = posthoc_models(models, *_posthoc_hooks(args, cfg))
        dataset = build_dataset(cfg.data, args.split, mode="test", fragments=not args.no_fragments)
        views = tta_views(args.tta, args.tta_scales)
        if dist_info.is_main:
            print(
                f"{args.split}: {len(dataset.scenes)} scenes, {len(models)} model(s), {len(views)} view(s), "
                f"{'no ' if args.no_fragments else ''}fragments, device {dist_info.device}"
            )
            if posthoc:
                print("post-hoc: " + ", ".join(f"{k} tau {v['tau']:g}" for k, v in posthoc.items()))
        result = evaluate_split(
            models,
            dataset,
            args.out,
            views=views,
            num_classes=int(cfg.model.num_classes),
            save_predictions=args.save_predictions,
            raw=args.raw,
            device=dist_info.device,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            label_map=label_map,
            extra_metrics={"posthoc": posthoc} if posthoc else None,
        )
    finally:
        cleanup()
    if not dist_info.is_main:
        return 0 if result.ok else 1
    for scene, err in sorted(result.failed.items()):
        print(f"error: scene {scene} failed: {err}", file=sys.stderr)
    for problem in result.submission_problems:
        print(f"error: submission: {problem}", file=sys.stderr)
    if result.metrics is not None:
        m = result.metrics
        print(format_table(m))
        print(
            f"mIoU {100 * m['miou']:.2f} (head {100 * m['head_miou']:.2f}, common {100 * m['common_miou']:.2f}, "
            f"tail {100 * m['tail_miou']:.2f}); absent classes as 0: {100 * m['miou_absent_as_zero']:.2f}"
            if "head_miou" in m else f"mIoU {100 * m['miou']:.2f}"
        )
        print(f"written: {Path(args.out) / 'metrics.json'}")
    if result.submission is not None:
        state = "INVALID" if result.submission_problems else "valid"
        print(f"written: {result.submission} ({state})")
    if result.nothing_scored:
        print(f"error: no labelled point was scored; nothing written to {args.out}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {len(result.scenes)} scenes failed", file=sys.stderr)
    return 0 if result.ok else 1


def _posthoc_hooks(args: argparse.Namespace, cfg) -> tuple[LogitAdjust | None, TauNorm | None]:
    """The corrections the command line asks for; the prior from ``--prior`` or the config's data root."""
    adjust = None
    if args.logit_adjust is not None:
        k, spec = int(cfg.model.num_classes), spec_of(cfg.data)  # a label-mapped model keeps its own K
        prior, source = read_prior(k, cfg.data.get("root"), args.prior, args.prior_by, spec if spec.num_classes == k else None)
        adjust = LogitAdjust(prior, args.logit_adjust, source)
    elif args.prior is not None:
        raise ValueError("--prior is the prior of --logit-adjust, which is not given")
    return adjust, None if args.tau_norm is None else TauNorm(args.tau_norm)


if __name__ == "__main__":
    sys.exit(main())
