"""Evaluation speed: metric accumulation over a ScanNet-size split, and per-scene prediction with TTA.

1. ``SemSegMetric.process`` over 312 scenes × 150 k vertices (the validation split, 47 M vertices)
   on one core; target < 2 s. Labels are generated before timing.
2. Predicting one ScanNet-size scene (150 k vertices) with MinkUNet34C (backend auto, CPU):
   with fragments (every vertex from its own representative) or through the inverse map, without
   TTA and with 4 rotations; see ``bench_scene`` for how the scene time is obtained.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from common import median_seconds, write_results

from pointseg.evaluation.metrics import SemSegMetric

NUM_SCENES, NUM_VERTICES = 312, 150_000


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

    seconds = median_seconds(run, repeats)
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


class _FreeModel:
    """Stand-in with no cost (zero logits): isolates voxelization, fragments and voting."""

    def __call__(self, batch: dict) -> dict:
        return {"logits": torch.zeros((batch["feat"].shape[0], 200))}


def bench_scene(forward_repeats: int = 2, overhead_repeats: int = 3, full: bool = False) -> dict:
    """Seconds to predict one 150 k-vertex scene, without TTA and with 4 rotations.

    A MinkUNet34C forward on ~115 k voxels takes tens of seconds on 2 CPU cores and fragments
    need one forward per fragment, so running every configuration end to end would take many
    minutes. By default the scene time is therefore composed of measured parts: the median
    forward of MinkUNet34C on this scene × the number of forwards, plus the measured median of
    everything else (pipeline, fragments, softmax, voting) with a zero-cost stand-in model.
    ``full=True`` measures every configuration end to end instead.
    """
    from pointseg.data.transforms import build_transforms, default_test_transforms
    from pointseg.evaluation.inference import (
        TTAView,
        apply_view,
        fragment_batch,
        predict_scene,
        sample_fragments,
        tta_views,
    )
    from pointseg.models import build_backbone
    from pointseg.sparse import SparseTensor

    torch.manual_seed(0)
    backbone = build_backbone("MinkUNet34C", in_channels=3, backend="auto").eval()
    classifier = torch.nn.Linear(backbone.feature_dim, 200).eval()

    def model(batch: dict) -> dict:
        feat = backbone(SparseTensor(batch["feat"], batch["coords"]))
        return {"feat": feat, "logits": classifier(feat)}

    data = _synthetic_scene(NUM_VERTICES)
    pipelines = {}
    for mode, frag in (("fragments", True), ("inverse_map", False)):
        items = default_test_transforms(0.02, ["color"])
        for item in items:
            if item["name"] == "Voxelize":
                item.update(mode="test", fragments=frag)
        pipelines[mode] = build_transforms(items)
    sample = pipelines["fragments"](apply_view(data, TTAView()), None)
    first = sample_fragments(sample)[0]
    batch = fragment_batch(first)
    out: dict = {
        "vertices": NUM_VERTICES,
        "voxels": int(first["grid_coord"].shape[0]),
        "threads": torch.get_num_threads(),
        "backend": type(backbone).__name__ + "/auto",
    }
    with torch.no_grad():
        out["forward_seconds"] = median_seconds(lambda: model(batch), forward_repeats)
    for mode in ("fragments", "inverse_map"):
        for tta in (1, 4):
            views = tta_views(tta)
            frags = sum(len(sample_fragments(pipelines[mode](apply_view(data, v), None))) for v in views)
            overhead = median_seconds(
                lambda: predict_scene([_FreeModel()], data, pipelines[mode], views, 200),
                overhead_repeats,
            )
            row = {"forward_passes": frags, "overhead_seconds": overhead,
                   "seconds": frags * out["forward_seconds"] + overhead, "measured": "composed"}
            if full:
                row["seconds"] = median_seconds(
                    lambda: predict_scene([model], data, pipelines[mode], views, 200), 1
                )
                row["measured"] = "end to end"
            out[f"{mode}_tta{tta}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="time every scene configuration end to end (slow)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results = {"metric": bench_metric()}
    m = results["metric"]
    print("| measurement | median |")
    print("| --- | --- |")
    print(f"| SemSegMetric.process, {m['scenes']} scenes × {NUM_VERTICES:,} vertices (1 core) | {m['seconds']:.3f} s (target < 2 s) |")
    try:
        results["scene"] = bench_scene(full=args.full)
    except ImportError as e:  # the model package is optional for the metric half
        print(f"| scene prediction | skipped ({e}) |")
    else:
        s = results["scene"]
        print(f"| MinkUNet34C forward, {s['voxels']:,} voxels, {s['threads']} threads | {s['forward_seconds']:.2f} s |")
        for key in ("fragments_tta1", "fragments_tta4", "inverse_map_tta1", "inverse_map_tta4"):
            r = s[key]
            print(f"| predict one {NUM_VERTICES:,}-vertex scene, {key}: {r['forward_passes']} forwards "
                  f"+ {r['overhead_seconds']:.2f} s voting ({r['measured']}) | {r['seconds']:.1f} s |")
    write_results("eval", results)


if __name__ == "__main__":
    main()
