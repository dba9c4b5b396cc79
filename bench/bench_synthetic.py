"""Synthetic ScanNet generation speed: 100 default scenes (a budget of 40 k vertices each, ~59 k
on average with walls, floor and furniture) on 2 worker processes.

Target: under a minute. Prints a markdown table and writes bench/results/synthetic.json.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import write_results

from pointseg.synthetic import generate_synthetic_scannet

REPEATS = 2  # a run takes ~5 s on 2 idle cores
SCENES, VERTICES, WORKERS = 100, 40000, 2


def main() -> None:
    times, vertices = [], 0.0
    for _ in range(REPEATS):
        out = Path(tempfile.mkdtemp(prefix="bench_synthetic_"))
        try:
            start = time.perf_counter()
            s = generate_synthetic_scannet(out, train=SCENES, val=0, test=0, seed=0, vertices=VERTICES, workers=WORKERS, progress=False)
            times.append(time.perf_counter() - start)
            vertices = s["mean_vertices"] * SCENES
        finally:
            shutil.rmtree(out, ignore_errors=True)
    med = statistics.median(times)
    result = {
        "scenes": SCENES,
        "vertices_requested": VERTICES,
        "workers": WORKERS,
        "total_vertices": int(vertices),
        "seconds_median": med,
        "seconds_all": times,
        "vertices_per_second": vertices / med,
        "target_seconds": 60,
    }
    print("| scenes | workers | mean vertices | median time (s) | vertices/s |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {SCENES} | {WORKERS} | {vertices / SCENES:.0f} | {med:.1f} | {vertices / med:,.0f} |")
    write_results("synthetic", result)


if __name__ == "__main__":
    main()
