"""Preemption soak: a training stopped by SIGTERM to its whole process group (as SLURM, systemd
or ``kill -TERM -- -PGID`` send it: the loader process too) at random iterations, five times,
and resumed with ``--resume`` each time, ends with exactly the weights of an uninterrupted run.

The synthetic config (``configs/synthetic/ceco.yaml``: MinkUNet14S, batch 2, 400 iterations,
validation and saves every 100) on a small generated set, on the CPU, with one loader process
(the process a scheduler's signal used to kill) and one compute thread in both runs (a thread
count chosen while running would change the rounding of sums between the two runs, which is no
matter of preemption). Every
tensor of the final ``last.pth`` (model, optimizer state) must be equal (``torch.equal``); the
table also gives the wall time of both runs and the iterations each stop cost (those after the
last save that the stopped run had done: none, the stop saves). Prints a markdown table and
writes ``bench/results/preemption.json``; exits 1 if the weights differ.

``tests/test_reliability.py`` runs :func:`interrupt_and_resume` at the tiny test scale.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from pointseg.engine.checkpoint import load_checkpoint  # noqa: E402
from pointseg.engine.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic" / "ceco.yaml"
TRAIN = ROOT / "tools" / "train.py"
SCENES, VAL_SCENES, VERTICES = 8, 2, 20000
INTERRUPTIONS = 5
ITERATIONS: int | None = None  # None: the config's (a smaller number for a quick try)
SEED = 0
# Exit status of a training stopped by SIGTERM (pointseg.cli.train: 128 + 15).
STOPPED = 128 + signal.SIGTERM


def _logged(run: Path) -> int:
    """Iterations logged so far (``train.log_every=1``: one complete line each)."""
    path = run / "log.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_training(command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600) -> None:
    """One training to its end, in its own process group; raises with its stderr if it fails."""
    done = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} ended with status {done.returncode}:\n{done.stderr}")


def interrupt_and_resume(
    command: Sequence[str],
    run: Path,
    total: int,
    interruptions: int,
    rng: np.random.Generator,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> list[int]:
    """Run ``command`` (a training writing ``run`` with ``train.log_every=1``) to ``total``
    iterations, stopping it ``interruptions`` times by SIGTERM to its process group at random
    iterations and continuing it with ``--resume``; returns the iterations it stopped at.

    The i-th stop is aimed at a random iteration of the i-th of ``interruptions`` equal windows
    of the run's first part (after the previous stop): the signal goes out once the process has
    logged that iteration, so it lands in the middle of a later step, a save or a validation,
    whatever runs then. Each stop must exit with :data:`STOPPED`, its ``last.pth`` saved.
    """
    stops: list[int] = []
    # The windows leave the last stretch of the run free of stops (a fifth of it for four
    # stops), so that a stop aimed at the last window cannot come after the run finished.
    bounds = np.linspace(1, total - total // (interruptions + 1), interruptions + 1).astype(int)
    for i in range(interruptions):
        low = max(int(bounds[i]), stops[-1] + 1 if stops else 1)
        high = min(max(int(bounds[i + 1]), low + 1), total - 1)  # exclusive
        if low >= high:
            break  # no room left before the end
        target = int(rng.integers(low, high))
        with tempfile.TemporaryFile("w+") as log:  # not a pipe: nobody reads it while it runs
            proc = subprocess.Popen(
                [*command, *(["--resume"] if stops else [])],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                start_new_session=True,  # its own process group, as a job's
            )
            try:
                deadline = time.monotonic() + timeout
                while _logged(run) < target and proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{run}: iteration {target} not reached in {timeout:.0f} s")
                    time.sleep(0.01)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except BaseException:
                kill_group(proc)
                raise
            if proc.returncode != STOPPED:
                log.seek(0)
                raise RuntimeError(
                    f"stop {i + 1} (at iteration {target}) ended with status {proc.returncode}, not {STOPPED}:\n{log.read()}"
                )
        stops.append(int(load_checkpoint(run / "checkpoints" / "last.pth")["iteration"]))
    run_training([*command, "--resume"], env, timeout)
    return stops


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (a test or benchmark that failed midway) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def differing_tensors(a: Path, b: Path) -> list[str]:
    """Names of the tensors (model weights and buffers, optimizer state) that differ between two
    checkpoints, by ``torch.equal``; empty when they are exactly the same."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    differ = sorted(set(ca["model"]) ^ set(cb["model"]))
    differ += [f"model.{k}" for k in sorted(set(ca["model"]) & set(cb["model"])) if not torch.equal(ca["model"][k], cb["model"][k])]
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    for param in sorted(set(sa) | set(sb)):
        for name in sorted(set(sa.get(param, {})) | set(sb.get(param, {}))):
            x, y = sa.get(param, {}).get(name), sb.get(param, {}).get(name)
            if x is None or y is None or not torch.equal(torch.as_tensor(x), torch.as_tensor(y)):
                differ.append(f"optimizer.state.{param}.{name}")
    return differ


def main() -> dict:
    from pointseg.preprocessing.preprocess import preprocess_scannet200
    from pointseg.synthetic import generate_synthetic_scannet

    work = Path(tempfile.mkdtemp(prefix="bench_preemption_"))
    try:
        generate_synthetic_scannet(work / "raw", train=SCENES, val=VAL_SCENES, test=0, seed=SEED, vertices=VERTICES, progress=False)
        preprocess_scannet200(work / "raw", work / "data", progress=False)
        total = ITERATIONS or int(load_config(CONFIG).train.iterations)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}

        def command(run: Path) -> list[str]:
            return [sys.executable, str(TRAIN), "--config", str(CONFIG), "--out", str(run), "--device", "cpu",
                    f"data.root={work / 'data'}", "data.num_workers=1", "train.threads=1", "train.log_every=1",
                    "train.progress_bar=false", f"train.iterations={total}"]

        start = time.perf_counter()
        run_training(command(work / "reference"), env)
        reference_s = time.perf_counter() - start
        start = time.perf_counter()
        stops = interrupt_and_resume(command(work / "preempted"), work / "preempted", total, INTERRUPTIONS, np.random.default_rng(SEED), env)
        preempted_s = time.perf_counter() - start
        differ = differing_tensors(work / "reference" / "checkpoints" / "last.pth", work / "preempted" / "checkpoints" / "last.pth")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "iterations": total,
        "interruptions": len(stops),
        "stopped_at": stops,
        "reference_seconds": reference_s,
        "preempted_seconds": preempted_s,
        "differing_tensors": differ,
        "identical": not differ,
    }
    print("| iterations | stops (at iteration) | uninterrupted (s) | stopped and resumed (s) | weights |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {total} | {len(stops)} ({', '.join(map(str, stops))}) | {reference_s:.0f} | {preempted_s:.0f} | "
          f"{'identical' if not differ else f'{len(differ)} tensors differ'} |")
    write_results("preemption", result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["identical"] else 1)
