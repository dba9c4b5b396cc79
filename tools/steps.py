"""Running pointseg's own command-line tools as the steps of a larger job (demo, study).

Each step is the same tool a researcher runs by hand, echoed before it runs, so the job's output
doubles as a recipe.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str, *args: object) -> list:
    """Command line of ``tools/<name>.py`` with this interpreter."""
    return [sys.executable, ROOT / "tools" / f"{name}.py", *args]


def _shown(cmd: list) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd).replace(sys.executable, "python")


def run(cmd: list, job: str) -> None:
    """Echo and run one step from the repository root; stop ``job`` if the step fails."""
    print(f"\n$ {_shown(cmd)}", flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if rc:
        raise SystemExit(f"{job}: step failed with exit status {rc}: {_shown(cmd)}")


def run_parallel(
    jobs: list[tuple[str, Path, list[list]]],
    workers: int,
    env: dict[str, str] | None = None,
    on_done: Callable[[str], None] | None = None,
) -> None:
    """Run ``(name, log file, steps)`` jobs ``workers`` at a time; the steps of a job run in order,
    their output appended to its log file, and ``on_done(name)`` is called (one job at a time)
    when a job has finished. Stops (after the running jobs) if a step fails."""
    lock = threading.Lock()
    failed: list[str] = []
    full_env = {**os.environ, **(env or {})}

    def one(name: str, log: Path, steps: list[list]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        for cmd in steps:
            if failed:
                return
            with lock:
                print(f"[{name}] $ {_shown(cmd)}", flush=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"$ {_shown(cmd)}\n")
                f.flush()
                rc = subprocess.call([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=full_env)
            if rc:
                with lock:
                    failed.append(f"{name}: exit status {rc} (see {log})")
                return
        with lock:
            print(f"[{name}] done", flush=True)
            if on_done is not None:
                on_done(name)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(one, *job) for job in jobs]:
            fut.result()
    if failed:
        raise SystemExit("study: " + "; ".join(failed))
