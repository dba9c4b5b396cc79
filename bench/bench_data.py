"""Data pipeline speed: voxelization of a 1 M-point room and one 150 k-vertex training sample.

Targets: train-mode voxelization of 1 M points no slower than one ``np.argsort`` of 1 M int64
keys measured in the same run; one training sample (load + augment + voxelize) ≤ 60 ms on one
core. Writes ``bench/results/data.json``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import median_seconds, write_results

from pointseg.data import build_dataset
from pointseg.data.voxelize import grid_coordinates, voxelize, voxelize_points
from pointseg.utils.io import save_npy

REPEATS = 11


def room_cloud(n: int, size=(10.0, 8.0, 3.0), seed: int = 0) -> np.ndarray:
    """``n`` points on the floor, ceiling and walls of a room, plus furniture-like boxes.

    At 1 M points over the ~268 m² of a 10 x 8 x 3 m room the spacing is ~1.6 cm, close to a
    ScanNet mesh's vertex spacing.
    """
    rng = np.random.default_rng(seed)
    size = np.asarray(size)
    c = rng.random((n, 3)) * size
    axis = rng.choice(3, n, p=[0.3, 0.3, 0.4])
    side = rng.random(n) < 0.5
    c[np.arange(n), axis] = np.where(side, 0.0, size[axis])
    furniture = rng.random(n) < 0.2  # box tops at table/bed height
    c[furniture, 2] = rng.choice([0.45, 0.75], furniture.sum())
    return c.astype(np.float32)


def median_ms(fn, repeats: int = REPEATS, clock=time.perf_counter) -> float:
    """Median milliseconds of ``fn`` (after a warm-up call)."""
    return median_seconds(fn, repeats, clock=clock) * 1e3


def write_scene(folder: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    coord = room_cloud(n, size=(6.0, 5.0, 2.8), seed=1)
    normal = rng.standard_normal((n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    folder.mkdir(parents=True)
    save_npy(folder / "coord.npy", coord)
    save_npy(folder / "color.npy", rng.integers(0, 256, (n, 3), dtype=np.uint8))
    save_npy(folder / "normal.npy", normal)
    save_npy(folder / "segment200.npy", rng.integers(-1, 200, n).astype(np.int16))
    save_npy(folder / "instance.npy", rng.integers(-1, 40, n).astype(np.int16))


def main() -> dict:
    torch.set_num_threads(1)
    n = 1_000_000
    coord = room_cloud(n)
    keys = np.random.default_rng(2).integers(0, 2**46, n)
    rng = np.random.default_rng(3)
    grid = grid_coordinates(coord, 0.02)

    # interleave the reference with the measured code so machine load affects both alike
    argsort_ms, train_ms, train_grid_ms, test_ms = [], [], [], []
    for _ in range(3):
        argsort_ms.append(median_ms(lambda: np.argsort(keys), 5))
        train_ms.append(median_ms(lambda: voxelize_points(coord, 0.02, "train", rng), 5))
        train_grid_ms.append(median_ms(lambda: voxelize(grid, "train", rng), 5))
        test_ms.append(median_ms(lambda: voxelize_points(coord, 0.02, "test"), 5))
    argsort_ms, train_ms, train_grid_ms, test_ms = map(statistics.median, (argsort_ms, train_ms, train_grid_ms, test_ms))
    voxels = voxelize(grid, "test").num_voxels

    with tempfile.TemporaryDirectory() as tmp:
        write_scene(Path(tmp) / "train" / "scene0000_00", 150_000)
        dataset = build_dataset({"root": tmp}, "train", "train")
        counter = iter(range(10**6))
        def one_sample():  # a new epoch each call: fresh augmentations, same scene
            dataset.set_epoch(next(counter))
            return dataset[0]

        sample_ms = median_ms(one_sample)
        sample_cpu_ms = median_ms(one_sample, clock=time.process_time)
        sample_voxels = len(dataset[0]["grid_coord"])

    result = {
        "note": "one core (torch.set_num_threads(1)); medians of repeated runs",
        "points": n,
        "voxels_2cm": voxels,
        "argsort_1m_int64_ms": argsort_ms,
        "voxelize_train_ms": train_ms,
        "voxelize_train_from_grid_ms": train_grid_ms,
        "voxelize_test_ms": test_ms,
        "train_points_per_s": n / train_ms * 1e3,
        "test_points_per_s": n / test_ms * 1e3,
        "train_over_argsort": train_ms / argsort_ms,
        "sample_150k_ms": sample_ms,
        "sample_150k_cpu_ms": sample_cpu_ms,
        "sample_150k_voxels": sample_voxels,
    }
    rows = [
        ("np.argsort, 1 M int64 (reference)", argsort_ms, ""),
        ("voxelize train, 1 M points (coord → voxels)", train_ms, f"{n / train_ms / 1e3:.1f} M pts/s, {train_ms / argsort_ms:.2f}× argsort"),
        ("voxelize train, 1 M points (from grid)", train_grid_ms, f"{train_grid_ms / argsort_ms:.2f}× argsort"),
        ("voxelize test + inverse, 1 M points", test_ms, f"{n / test_ms / 1e3:.1f} M pts/s"),
        ("training sample, 150 k vertices (load + augment + voxelize)", sample_ms, "wall; target ≤ 60 ms"),
        ("same, CPU time", sample_cpu_ms, "process_time"),
    ]
    print("one core; medians\n")
    print("| step | ms | note |\n| --- | ---: | --- |")
    for name, ms, note in rows:
        print(f"| {name} | {ms:.1f} | {note} |")
    write_results("data", result)
    return result


if __name__ == "__main__":
    main()
