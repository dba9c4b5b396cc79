"""Evaluation speed: metric accumulation over a ScanNet-size split, and per-scene prediction with TTA.

1. ``SemSegMetric.process`` over 312 scenes × 150 k vertices (the validation split, 47 M vertices)
   on one core; target < 2 s. Labels are generated before timing.
2. Predicting one ScanNet-size scene (150 k vertices) with MinkUNet34C (backend auto, CPU):
   fragments + voting, without TTA and with 4 rotations.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pointseg.evaluation.metrics import SemSegMetric
from pointseg.utils.io import atomic_write_text

HERE = Path(__file__).resolve().parent
NUM_SCENES, NUM_VERTICES = 312, 150_000


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_metric(repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    # A realistic mix: 10 % ignored ground truth, 1 % invalid predictions, stored as int64.
    scenes = []
    for _ in range(NUM_SCENES):
        gt = rng.integers(0, 200, NUM_VERTICES)
        gt[rng.random(NUM_VERTICES) < 0.1] = -1
        pred = np.where(rng.random(NUM_VERTICES) < 0.9, gt, rng.integers(-1, 201, NUM_VERTICES))
        scenes.append((pred, gt))
    metric = SemSegMetric()

    def run() -> None:
        metric.reset()
        for pred, gt in scenes:
            metric.process(pred, gt)
        metric.evaluate()

    seconds = _median_time(run, repeats)
    return {"scenes": NUM_SCENES, "vertices": NUM_SCENES * NUM_VERTICES, "seconds": seconds, "target_s": 2.0}


def _synthetic_scene(n: int, seed: int = 0) -> dict:
    """A 6 × 5 × 3 m room-like point set: floor, walls and boxes, about ScanNet density."""
    rng = np.random.default_rng(seed)
    parts = []
    m = n // 4
    parts.append(np.c_[rng.uniform(0, 6, m), rng.uniform(0, 5, m), np.zeros(m)])  # floor
    parts.append(np.c_[rng.uniform(0, 6, m), np.zeros(m), rng.uniform(0, 3, m)])  # wall
    parts.append(np.c_[np.zeros(m), rng.uniform(0, 5, m), rng.uniform(0, 3, m)])  # wall
    r = n - 3 * m
    parts.append(np.c_[rng.uniform(1, 5, r), rng.uniform(1, 4, r), rng.uniform(0, 1, r)])  # furniture
    coord = np.concatenate(parts).astype(np.float32)
    return {"coord": coord, "color": rng.uniform(0, 255, (n, 3)).astype(np.float32)}


def bench_scene(repeats: int = 3) -> dict:
    from pointseg.evaluation.inference import apply_view, tta_views, view_fragments, vote
    from pointseg.models import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("MinkUNet34C", in_channels=3, num_classes=200, backend="auto").eval()

    def model(batch: dict) -> dict:
        from pointseg.sparse import SparseTensor

        return backbone(SparseTensor(batch["feat"], batch["coords"]))

    data = _synthetic_scene(NUM_VERTICES)
    feat = lambda d: d["color"] / 255.0 - 0.5  # noqa: E731
    out: dict = {"vertices": NUM_VERTICES, "threads": torch.get_num_threads()}
    frags = view_fragments(data, 0.02, feat)
    out["voxels"] = int(frags[0]["index"].shape[0])
    for mode, use_fragments in (("fragments", True), ("inverse_map", False)):
        for tta in (1, 4):
            views = tta_views(tta)

            def run() -> None:
                vote([model], [view_fragments(apply_view(data, v), 0.02, feat, use_fragments) for v in views],
                     NUM_VERTICES, 200)

            n_frag = sum(len(view_fragments(apply_view(data, v), 0.02, feat, use_fragments)) for v in views)
            out[f"{mode}_tta{tta}"] = {"seconds": _median_time(run, repeats), "forward_passes": n_frag}
    return out


def main() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results = {"metric": bench_metric()}
    m = results["metric"]
    print("| measurement | median |")
    print("| --- | --- |")
    print(f"| SemSegMetric.process, {m['scenes']} scenes × {NUM_VERTICES:,} vertices (1 core) | {m['seconds']:.3f} s (target < 2 s) |")
    try:
        results["scene"] = bench_scene()
    except ImportError as e:  # the model package is optional for the metric half
        print(f"| scene prediction | skipped ({e}) |")
    else:
        s = results["scene"]
        for key in ("fragments_tta1", "fragments_tta4", "inverse_map_tta1", "inverse_map_tta4"):
            r = s[key]
            print(f"| MinkUNet34C, {NUM_VERTICES:,} vertices ({s['voxels']:,} voxels), {key} "
                  f"({r['forward_passes']} forwards, {s['threads']} threads) | {r['seconds']:.2f} s |")
    out = HERE / "results" / "eval.json"
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
