"""MinkUNet34C forward and forward+backward on one ScanNet-size synthetic scene, per backend.

Every installed backend is timed in one run: torch, spconv and MinkowskiEngine (``make
minkowski``; reported as not installed otherwise). Each backend runs in its own subprocess (same
seed, so the same scene and the same weights), which makes the peak-memory figure (``ru_maxrss``
growth over the measured work) per backend.
CPU runs use 2 threads; on CUDA the peak is ``torch.cuda.max_memory_allocated``.
Writes ``bench/results/backbone.json`` and prints a markdown table.

CPU figures are only meaningful on an otherwise idle machine: both backends run many short
2-thread OpenMP regions, and with other processes competing for the cores single runs were
measured 10-20× slower than on the idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch
from common import median_seconds, write_results

VOXEL = 0.02  # metres
REPEATS = 3
THREADS = 2


def room_scene(seed: int = 0, voxel: float = VOXEL) -> np.ndarray:
    """Voxel coordinates (M, 3) of a room's floor, four walls and a few boxes, as surfaces.

    A 4.2 m × 3.6 m × 2.2 m room at 2 cm gives ~150 k occupied voxels, the size of a
    ScanNet scene after 2 cm voxelization.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = int(4.2 / voxel), int(3.6 / voxel), int(2.2 / voxel)
    pts = []

    def plane(x0, x1, y0, y1, z0, z1):
        xs, ys, zs = np.arange(x0, x1 + 1), np.arange(y0, y1 + 1), np.arange(z0, z1 + 1)
        g = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
        pts.append(g)

    plane(0, nx, 0, ny, 0, 0)  # floor
    plane(0, nx, 0, 0, 0, nz)  # walls
    plane(0, nx, ny, ny, 0, nz)
    plane(0, 0, 0, ny, 0, nz)
    plane(nx, nx, 0, ny, 0, nz)
    for _ in range(6):  # boxes: top and four sides
        sx, sy, sz = rng.integers(15, 50, size=3)
        x0, y0 = rng.integers(5, nx - sx - 5), rng.integers(5, ny - sy - 5)
        plane(x0, x0 + sx, y0, y0 + sy, sz, sz)
        plane(x0, x0 + sx, y0, y0, 1, sz)
        plane(x0, x0 + sx, y0 + sy, y0 + sy, 1, sz)
        plane(x0, x0, y0, y0 + sy, 1, sz)
        plane(x0 + sx, x0 + sx, y0, y0 + sy, 1, sz)
    return np.unique(np.concatenate(pts), axis=0).astype(np.int32)


def _inputs(device: str, voxel: float):
    from pointseg.sparse import SparseTensor

    grid = torch.from_numpy(room_scene(voxel=voxel))
    coords = torch.cat([torch.zeros(len(grid), 1, dtype=torch.int32), grid], 1).to(device)
    feats = torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(0)).to(device)
    return SparseTensor(feats, coords)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, device: str, repeats: int) -> float:
    # The warm-up call fills the allocator and spconv's JIT caches (kernel maps are rebuilt
    # every forward, so they are inside the timing).
    return median_seconds(fn, repeats, sync=lambda: _sync(device))


def worker(backend: str, device: str, voxel: float = VOXEL, repeats: int = REPEATS) -> dict:
    """Time one backend in this process; returns seconds and peak memory (MiB)."""
    from pointseg.models import build_backbone

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = _inputs(device, voxel)
    backbone = build_backbone("MinkUNet34C", 3, backend=backend)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.feature_dim, 200)).to(device)  # + point classifier
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    fwd = _median_time(forward, device, repeats)
    fwd_bwd = _median_time(forward_backward, device, repeats)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"backend": backend, "device": device, "voxels": len(x), "forward_s": fwd,
            "forward_backward_s": fwd_bwd, "iters_per_s": 1.0 / fwd_bwd, "peak_mib": peak}


def main(voxel: float = VOXEL, repeats: int = REPEATS) -> dict:
    from pointseg.sparse import BACKENDS, available_backends

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    available = available_backends()  # each call retries the imports
    missing = [b for b in BACKENDS if b not in available]
    rows = []
    for device in devices:
        for backend in available:
            cmd = [sys.executable, __file__, "--worker", backend, device, "--voxel", str(voxel),
                   "--repeats", str(repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                rows.append({"backend": backend, "device": device, "error": out.stderr.strip()[-500:]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratios = {other: {} for other in ("spconv", "minkowski")}
    for device in devices:
        t = {r["backend"]: r for r in rows if r["device"] == device and "error" not in r}
        for other, ratio in ratios.items():
            if "torch" in t and other in t:
                ratio[device] = {
                    k: t["torch"][k] / t[other][k] for k in ("forward_s", "forward_backward_s")
                }
    result = {"model": "MinkUNet34C", "threads_cpu": THREADS, "repeats": repeats, "voxel": voxel,
              "rows": rows, "not_installed": missing, "torch_over_spconv": ratios["spconv"],
              "torch_over_minkowski": ratios["minkowski"], "target_cpu_ratio": 1.3}
    print("| backend | device | voxels | forward s | fwd+bwd s | it/s (fwd+bwd) | peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['device']} | error: {r['error'][:60]} | | | | |")
        else:
            print(f"| {r['backend']} | {r['device']} | {r['voxels']} | {r['forward_s']:.3f} | "
                  f"{r['forward_backward_s']:.3f} | {r['iters_per_s']:.2f} | {r['peak_mib']:.0f} |")
    for other, ratio in ratios.items():
        for device, rt in ratio.items():
            target = " (target <= 1.3x on cpu)" if other == "spconv" else ""
            print(f"\ntorch / {other} on {device}: forward {rt['forward_s']:.2f}x, "
                  f"forward+backward {rt['forward_backward_s']:.2f}x{target}")
    for backend in missing:
        hint = " (`make minkowski` builds it)" if backend == "minkowski" else ""
        print(f"\n{backend}: not installed, not timed{hint}")
    write_results("backbone", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxel", type=float, default=VOXEL, help="voxel size in metres (0.05 for a quick look)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, voxel=args.voxel, repeats=args.repeats)))
    else:
        main(args.voxel, args.repeats)
