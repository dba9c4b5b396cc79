"""Train a segmentor: ``pointseg-train --config configs/synthetic/ceco.yaml [key=value ...]``
(or ``python tools/train.py ...``).

Several GPUs or nodes: ``torchrun --nproc_per_node N tools/train.py --config ...``.
A killed or preempted run continues exactly with ``--resume`` (same ``--out``); SIGTERM makes the
run save ``last.pth`` after the current iteration and exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pointseg.cli.common import add_common, run_command
from pointseg.engine.checkpoint import export_inference_weights
from pointseg.engine.config import default_run_dir, explain_config, format_explained
from pointseg.engine.distributed import cleanup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (optional with --resume: RUN/config.yaml is used)")
    p.add_argument("--out", help="run folder (default runs/<config folder>/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pth")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument(
        "--export-inference",
        metavar="PATH",
        help="after training, write the evaluation weights (no center branch) of best.pth (else last.pth)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config, where each value came from, and exit")
    p.add_argument("--config-reference", action="store_true", help="print every config key, its default and its doc (docs/config.md), and exit")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.iterations=100)")
    add_common(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.config_reference:
        from pointseg.engine.config import schema_markdown

        print(schema_markdown(), end="")
        return 0
    if args.config is None and not (args.resume and args.out):
        print("error: --config is required (or --resume with --out of an existing run)", file=sys.stderr)
        return 2
    config = args.config or str(Path(args.out) / "config.yaml")
    cfg, sources = explain_config(config, args.overrides)
    if args.print_config:
        print(format_explained(cfg, sources))
        return 0
    run_dir = Path(args.out) if args.out else default_run_dir(config)

    from pointseg.engine.trainer import BEST, CHECKPOINT_DIR, LAST, NonFiniteLossError, Trainer

    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume, device=args.device)
        signal.signal(signal.SIGTERM, lambda *_: trainer.request_stop())
        try:
            summary = trainer.train()
        except NonFiniteLossError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if trainer.is_main:
            print(f"done: iteration {summary['iteration']}, best val mIoU {summary['best_miou']}, run {run_dir}")
            if args.export_inference and summary["iteration"] >= trainer.total:
                ckpts = run_dir / CHECKPOINT_DIR
                source = ckpts / BEST if (ckpts / BEST).exists() else ckpts / LAST
                export_inference_weights(source, args.export_inference)
                print(f"inference weights of {source} written to {args.export_inference}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
