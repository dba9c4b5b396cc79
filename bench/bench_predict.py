"""pointseg-predict on a 3-million-point scan on CPU: wall time and peak memory within a voxel budget.

A synthetic 10 × 8 × 3 m room (floor, ceiling, four walls and a dozen pieces of furniture, as
surfaces, with 8-bit colours, some duplicate points and some NaN points) is written as a binary
PLY, as a terrestrial scanner would leave it: far denser than the 2 cm voxel grid. The checkpoint
is the synthetic CPU-scale model (``configs/synthetic/baseline.yaml``: MinkUNet14S, 5 cm voxels,
colour input, torch backend) with random weights: speed and memory do not depend on training.

``pointseg-predict`` runs in its own process, as a user runs it, with ``--max-voxels``: the peak
resident memory of that process (``ru_maxrss``) is the figure, with its wall and CPU time (the
CPU time is what a shared machine inflates least), the number of chunks and the largest chunk
(which must stay within the budget). Writes
``bench/results/predict.json`` and prints a table.

CPU figures are only meaningful on an otherwise idle machine (see bench_backbone.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import write_results

ROOT = Path(__file__).resolve().parents[1]
POINTS = 3_000_000
MAX_VOXELS = 30_000
OVERLAP_M = 0.5
THREADS = 2


def synthetic_scan(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, 3) points on the surfaces of a furnished room and uint8 (n, 3) colours."""
    rng = np.random.default_rng(seed)
    lx, ly, lz = 10.0, 8.0, 3.0
    # surfaces as (origin, edge u, edge v, colour)
    surfaces = [
        ((0, 0, 0), (lx, 0, 0), (0, ly, 0), (150, 120, 90)),  # floor
        ((0, 0, lz), (lx, 0, 0), (0, ly, 0), (235, 235, 230)),  # ceiling
        ((0, 0, 0), (lx, 0, 0), (0, 0, lz), (200, 200, 185)),  # walls
        ((0, ly, 0), (lx, 0, 0), (0, 0, lz), (200, 200, 185)),
        ((0, 0, 0), (0, ly, 0), (0, 0, lz), (180, 190, 200)),
        ((lx, 0, 0), (0, ly, 0), (0, 0, lz), (180, 190, 200)),
    ]
    for _ in range(12):  # furniture: a top and four sides
        sx, sy, sz = rng.uniform(0.4, 2.0), rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.8)
        x0, y0 = rng.uniform(0.2, lx - sx - 0.2), rng.uniform(0.2, ly - sy - 0.2)
        c = tuple(int(v) for v in rng.integers(30, 230, 3))
        surfaces += [
            ((x0, y0, sz), (sx, 0, 0), (0, sy, 0), c),
            ((x0, y0, 0), (sx, 0, 0), (0, 0, sz), c),
            ((x0, y0 + sy, 0), (sx, 0, 0), (0, 0, sz), c),
            ((x0, y0, 0), (0, sy, 0), (0, 0, sz), c),
            ((x0 + sx, y0, 0), (0, sy, 0), (0, 0, sz), c),
        ]
    area = np.array([np.linalg.norm(np.cross(u, v)) for _, u, v, _ in surfaces])
    counts = rng.multinomial(n, area / area.sum())
    coord = np.empty((n, 3), np.float32)
    color = np.empty((n, 3), np.uint8)
    start = 0
    for (o, u, v, c), k in zip(surfaces, counts):
        st = rng.random((k, 2))
        coord[start:start + k] = np.asarray(o) + st[:, :1] * np.asarray(u) + st[:, 1:] * np.asarray(v)
        color[start:start + k] = np.clip(np.asarray(c) + rng.normal(0, 12, (k, 3)), 0, 255)
        start += k
    coord += rng.normal(0, 0.003, coord.shape).astype(np.float32)  # scanner noise
    coord[rng.integers(0, n, 1000)] = coord[rng.integers(0, n, 1000)]  # duplicate points
    coord[rng.integers(0, n, 100)] = np.nan  # dropouts
    return coord, color


def write_scan(path: Path, coord: np.ndarray, color: np.ndarray) -> None:
    from plyfile import PlyData, PlyElement

    v = np.empty(len(coord), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, a in enumerate("xyz"):
        v[a] = coord[:, i]
    for i, a in enumerate(("red", "green", "blue")):
        v[a] = color[:, i]
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))


def write_checkpoint(path: Path) -> None:
    from pointseg.engine.checkpoint import save_checkpoint
    from pointseg.engine.config import load_config, to_plain_dict
    from pointseg.models.segmentor import build_segmentor

    cfg = load_config(ROOT / "configs" / "synthetic" / "baseline.yaml", ["model.backend=torch"])
    torch.manual_seed(0)
    model = build_segmentor(cfg, train=False)
    save_checkpoint({"format": 2, "model": model.state_dict(), "config": to_plain_dict(cfg), "iteration": 0}, path)


def main(points: int = POINTS, max_voxels: int = MAX_VOXELS, overlap: float = OVERLAP_M) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        coord, color = synthetic_scan(points)
        write_scan(tmp / "scan.ply", coord, color)
        del coord, color
        write_checkpoint(tmp / "model.pth")
        cmd = [sys.executable, "-m", "pointseg.cli.predict", str(tmp / "scan.ply"), "--checkpoint", str(tmp / "model.pth"),
               "--out", str(tmp / "out"), "--max-voxels", str(max_voxels), "--overlap", str(overlap), "--no-progress"]
        # this checkout's pointseg, on THREADS threads
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(THREADS)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"pointseg-predict failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the only child: pointseg-predict
        peak_mib, cpu_s = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        entry = json.loads((tmp / "out" / "summary.json").read_text())["scans"][str(tmp / "scan.ply")]
    result = {
        "points": points, "model": "MinkUNet14S (configs/synthetic/baseline.yaml, torch backend)",
        "voxel_size": 0.05, "threads": THREADS, "max_voxels": max_voxels, "overlap_m": overlap,
        "voxels": entry["voxels"], "chunks": entry["chunks"], "largest_chunk_voxels": entry["largest_chunk_voxels"],
        "within_budget": entry["largest_chunk_voxels"] <= max_voxels,
        "dropped_non_finite": entry["dropped_non_finite"],
        "wall_s": round(wall, 1), "cpu_s": round(cpu_s, 1), "scan_s": entry["seconds"], "peak_rss_mib": round(peak_mib),
    }
    print("| points | voxels | max-voxels | chunks | largest chunk | wall s | CPU s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {points} | {result['voxels']} | {max_voxels} | {result['chunks']} | {result['largest_chunk_voxels']} | "
          f"{result['wall_s']:.1f} | {result['cpu_s']:.1f} | {result['peak_rss_mib']} |")
    print(f"\nwritten: {write_results('predict', result)}")
    if not result["within_budget"]:
        raise SystemExit(f"largest chunk {result['largest_chunk_voxels']} voxels exceeds --max-voxels {max_voxels}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=POINTS)
    ap.add_argument("--max-voxels", type=int, default=MAX_VOXELS)
    ap.add_argument("--overlap", type=float, default=OVERLAP_M, help="metres")
    args = ap.parse_args()
    main(args.points, args.max_voxels, args.overlap)
