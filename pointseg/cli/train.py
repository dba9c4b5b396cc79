"""Train a segmentor: ``pointseg-train --config configs/synthetic/ceco.yaml [key=value ...]``
(or ``python tools/train.py ...``).

Several GPUs or nodes: ``torchrun --nproc_per_node N tools/train.py --config ...``.
A killed or preempted run continues exactly with ``--resume`` (same ``--out``). Ctrl-C (SIGINT),
SIGTERM (a scheduler's preemption or cancel) or SIGUSR1 (SLURM's ``--signal=USR1@<seconds>``
before the time limit), to the main process or to the whole process group, makes the run finish
the current step, save ``last.pth``, print the command that continues it and exit with 128 + the
signal's number, the status a shell gives a process that signal ended: 130 (SIGINT), 143
(SIGTERM), 138 (SIGUSR1); ``--requeue-exit-code N`` sets another one for SIGTERM and SIGUSR1
(docs/cluster.md: the batch scripts). Another Ctrl-C more than a second after the first aborts
at once, without saving; one within a second is the same request (torchrun forwards a terminal's
Ctrl-C to its workers too), and so is a repeated SIGTERM or SIGUSR1. Overrides ``key=value`` may
stand anywhere on the line. One training at a time writes a run folder; starting afresh where
checkpoints exist needs ``--resume`` or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pointseg.cli.common import add_common, parse_with_overrides, run_command
from pointseg.engine.checkpoint import export_inference_weights
from pointseg.engine.config import default_run_dir, explain_config, format_explained
from pointseg.engine.distributed import STOP_SIGNALS, cleanup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (optional with --resume: RUN/config.yaml is used)")
    p.add_argument("--out", help="run folder (default runs/<config folder>/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pth")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds checkpoints: delete its checkpoints/, logs and config.yaml",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument(
        "--export-inference",
        metavar="PATH",
        help="after training, write the evaluation weights (no center branch) of best.pth (else last.pth)",
    )
    p.add_argument(
        "--requeue-exit-code",
        type=int,
        metavar="N",
        help="exit status after a stop on SIGTERM or SIGUSR1 (default 128 + the signal: 143, 138), "
        "for a scheduler that requeues on its own status",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config, where each value came from, and exit")
    p.add_argument("--config-reference", action="store_true", help="print every config key, its default and its doc (docs/config.md), and exit")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.iterations=100)")
    add_common(p)
    return parse_with_overrides(p, argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


SIGNAL_NAMES = {signum: signal.Signals(signum).name for signum in STOP_SIGNALS}
# A repeat sooner than this is the same request: torchrun forwards the Ctrl-C its workers got
# from the terminal too, and schedulers may send SIGTERM to every process of a job and again.
SAME_REQUEST_S = 1.0


def install_stop_handlers(trainer: Any) -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGUSR1 ask ``trainer`` to stop after the current step (it then
    saves); a Ctrl-C more than :data:`SAME_REQUEST_S` after the first aborts at once
    (KeyboardInterrupt, as Python's default handler does); sooner, or another signal, it is the
    same request and ignored.

    Data-loading processes ignore the signals (a terminal and a scheduler signal them too; see
    ``pointseg.engine.distributed.worker_init_fn``) and end when the trainer stops them. Returns
    the previous handlers.
    """
    main_pid = os.getpid()
    first: list[float] = []  # when the stop was requested

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:
            return
        if first:
            if signum == signal.SIGINT and time.monotonic() - first[0] > SAME_REQUEST_S:
                raise KeyboardInterrupt
            return
        first.append(time.monotonic())
        name = SIGNAL_NAMES[signum]
        trainer.request_stop(name)
        if trainer.is_main:
            abort = f" (Ctrl-C again, more than {SAME_REQUEST_S:g} s later, aborts without saving)"
            print(
                f"{name}: stopping after the current iteration and saving last.pth{abort if signum == signal.SIGINT else ''}",
                file=sys.stderr,
                flush=True,
            )

    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def stop_status(reason: str, requeue_exit_code: int | None = None) -> int:
    """Exit status of a run stopped by the signal named ``reason``: 128 + its number, as a shell
    reports a process that signal ended (130 for Ctrl-C), or ``requeue_exit_code`` for a
    scheduler's SIGTERM or SIGUSR1."""
    signum = next((s for s, name in SIGNAL_NAMES.items() if name == reason), signal.SIGINT)
    if requeue_exit_code is not None and signum != signal.SIGINT:
        return requeue_exit_code
    return 128 + signum


def resume_command(argv: list[str], world_size: int) -> str:
    """The command line that continues this run: the same one with ``--resume`` (not ``--overwrite``)."""
    program = sys.argv[0]
    words = ["python", program] if program.endswith(".py") else [Path(program).name]
    if world_size > 1:
        words = ["torchrun", f"--nproc_per_node={world_size}", program]
    args = [a for a in argv if a != "--overwrite"]
    return shlex.join([*words, *args, *([] if "--resume" in args else ["--resume"])])


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.config_reference:
        from pointseg.engine.config import schema_markdown

        print(schema_markdown(), end="")
        return 0
    if args.config is None and not (args.resume and args.out):
        raise ValueError("--config is required (or --resume with --out of an existing run)")
    if args.requeue_exit_code is not None and not 0 < args.requeue_exit_code < 256:
        raise ValueError(f"--requeue-exit-code must be 1..255, an exit status that is not success (got {args.requeue_exit_code})")
    config = args.config or str(Path(args.out) / "config.yaml")
    cfg, sources = explain_config(config, args.overrides)
    if args.print_config:
        print(format_explained(cfg, sources))
        return 0
    run_dir = Path(args.out) if args.out else default_run_dir(config)

    from pointseg.engine.trainer import BEST, CHECKPOINT_DIR, LAST, NonFiniteLossError, Trainer, ValidationFailed

    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume, device=args.device, overwrite=args.overwrite)
        previous = install_stop_handlers(trainer)
        try:
            summary = trainer.train()
        except (NonFiniteLossError, ValidationFailed) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if summary["stopped"]:
            reason = trainer.stop_reason or "stop requested"
            if trainer.is_main:
                print(
                    f"stopped at iteration {summary['iteration']} ({reason}), {run_dir / CHECKPOINT_DIR / LAST} saved; "
                    f"continue with:\n  {resume_command(argv, trainer.dist.world_size)}",
                    file=sys.stderr,
                )
            return stop_status(reason, args.requeue_exit_code)
        if trainer.is_main:
            print(f"done: iteration {summary['iteration']}, best val mIoU {summary['best_miou']}, run {run_dir}")
            if args.export_inference:  # not stopped: training reached train.iterations
                ckpts = run_dir / CHECKPOINT_DIR
                source = ckpts / BEST if (ckpts / BEST).exists() else ckpts / LAST
                export_inference_weights(source, args.export_inference)
                print(f"inference weights of {source} written to {args.export_inference}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
