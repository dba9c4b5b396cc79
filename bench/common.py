"""What every benchmark shares: a median timer and where results go.

Benchmarks run as scripts (``python bench/bench_<topic>.py``), so this folder is on ``sys.path``
and they import this module as ``common``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

from pointseg.utils.io import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def median_seconds(
    fn: Callable[[], object],
    repeats: int,
    *,
    warmup: bool = True,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median duration of ``fn`` over ``repeats`` calls, after one untimed warm-up call.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each call so that
    asynchronous device work is inside the timing; ``clock=time.process_time`` gives CPU time,
    which a machine shared with other jobs inflates less than wall time.
    """
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = clock()
        fn()
        if sync:
            sync()
        times.append(clock() - start)
    return statistics.median(times)


def write_results(topic: str, result: dict) -> Path:
    """Write ``bench/results/<topic>.json`` atomically and return its path."""
    path = RESULTS_DIR / f"{topic}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path
