"""Analysis throughput: collapse statistics per ScanNet-size scene and the scene PNG render.

* ``CollapseAccumulator.process`` on one scene's decoder features: 150 k voxels × 96 channels,
  labels over 200 classes (Zipf-like frequencies as in ScanNet200), in float32 as a model gives
  them. The streaming statistics must cost little next to the model's forward pass.
* ``CollapseAccumulator.evaluate`` with 200 classes (the pseudo-inverse of a 96×96 Σ_B and the
  cosine matrices), done once per checkpoint.
* ``render_scene_png`` of a 150 k-point scene (GT, prediction, error map; top view).

Writes ``bench/results/analysis.json`` and prints a markdown table of medians.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import median_seconds, write_results

from pointseg.analysis.collapse import CollapseAccumulator
from pointseg.analysis.visualize import render_scene_png
from pointseg.meta import class_table

REPEATS = 5
N_POINTS, DIM, K = 150_000, 96, 200


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, K + 1) ** 1.2
    labels = rng.choice(K, N_POINTS, p=p / p.sum())
    labels[rng.random(N_POINTS) < 0.1] = -1
    feat = (rng.normal(size=(K, DIM))[np.maximum(labels, 0)] + rng.normal(size=(N_POINTS, DIM))).astype(np.float32)
    coord = rng.uniform(0, [6, 5, 2.5], size=(N_POINTS, 3)).astype(np.float32)
    return feat, labels, coord


def main() -> dict:
    feat, labels, coord = _scene()
    acc = CollapseAccumulator(K, DIM)
    t_process = median_seconds(lambda: acc.process(feat, labels), REPEATS, warmup=False)
    groups = class_table().split_masks
    w = np.random.default_rng(1).normal(size=(K, DIM))
    t_eval = median_seconds(lambda: acc.evaluate(w, groups), REPEATS, warmup=False)
    pred = np.where(np.random.default_rng(2).random(N_POINTS) < 0.8, labels, 3)
    with tempfile.TemporaryDirectory() as tmp:
        t_render = median_seconds(lambda: render_scene_png(coord, labels, pred, Path(tmp) / "s.png"), 3, warmup=False)
    result = {
        "points": N_POINTS,
        "feature_dim": DIM,
        "num_classes": K,
        "process_s": t_process,
        "process_points_per_s": N_POINTS / t_process,
        "evaluate_s": t_eval,
        "render_png_s": t_render,
    }
    print(f"| step ({N_POINTS:,} points, D={DIM}, K={K}) | median |")
    print("| --- | --- |")
    print(f"| CollapseAccumulator.process (one scene) | {t_process * 1e3:.0f} ms ({N_POINTS / t_process / 1e6:.2f} M points/s) |")
    print(f"| CollapseAccumulator.evaluate (per checkpoint) | {t_eval * 1e3:.0f} ms |")
    print(f"| render_scene_png (3 panels) | {t_render:.2f} s |")
    write_results("analysis", result)
    return result


if __name__ == "__main__":
    main()
