"""Cost of CeCo's center branch: alone, and as a share of a MinkUNet34C training step.

* Branch alone: the default (released) head, i.e. reduce + BatchNorm of every point, center_pool,
  frozen 512-d projection, normalization, ETF logits, CE, and its backward, on ScanNet-size
  features (150 k voxels × 96, 200 classes), in ms.
* Training step (forward + backward) of a MinkUNet34C Segmentor with CE, with and without the
  center branch: the same model and weights in one process, the two modes interleaved and
  alternated in order, medians over the repeats. The overhead is (with − without) / without.

The step is measured on the backbone benchmark's room at 2 cm (155 k voxels, a ScanNet-size
batch; about 9 s per step on 2 idle CPU threads). The branch's share is also given as branch time
alone / step time on the same voxels, which a direct with/without difference cannot resolve
below the run-to-run noise of a busy machine. ``--quick`` uses the room at 6 cm (~40 k voxels).
Backend ``auto``, 2 threads on CPU; on CUDA when available (``--device cuda``).
Writes ``bench/results/ceco.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import room_scene  # noqa: E402  (the backbone benchmark's ScanNet-size room)
from common import write_results  # noqa: E402

from pointseg.losses.ceco import CenterCollapseLoss, center_pool  # noqa: E402
from pointseg.models.segmentor import build_segmentor  # noqa: E402

NUM_CLASSES = 200
FEATURE_DIM = 96
THREADS = 2


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def scene_batch(voxel: float, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The room as a one-scene batch, labels constant on 40 cm blocks (many classes), 5 % ignored."""
    grid = room_scene(seed=seed, voxel=voxel)
    rng = np.random.default_rng(seed)
    block = (grid * voxel / 0.4).astype(np.int64)
    segment = (block[:, 0] * 7 + block[:, 1] * 13 + block[:, 2] * 29) % NUM_CLASSES
    segment[rng.random(len(grid)) < 0.05] = -1
    coords = np.concatenate([np.zeros((len(grid), 1), np.int32), grid], 1)
    return {
        "coords": torch.from_numpy(coords).to(device),
        "feat": torch.from_numpy(rng.random((len(grid), 3), dtype=np.float32) - 0.5).to(device),
        "segment": torch.from_numpy(segment).to(device),
    }


def branch_ms(num_points: int, device: str, repeats: int = 15, literal: bool = False) -> float:
    """Median ms of the center branch (forward + backward) on (num_points, 96) features.

    ``literal``: the released head's order, every point reduced and standardized before pooling,
    instead of pooling the raw features and standardizing the centers (the same numbers)."""
    gen = torch.Generator().manual_seed(0)
    feat = torch.relu(torch.randn(num_points, FEATURE_DIM, generator=gen)).to(device).requires_grad_(True)
    segment = torch.randint(-1, NUM_CLASSES, (num_points,), generator=gen).to(device)
    loss_fn = CenterCollapseLoss(FEATURE_DIM, NUM_CLASSES).to(device)

    def literal_loss() -> torch.Tensor:
        centers, labels, _ = center_pool(loss_fn.reduce(feat), segment, NUM_CLASSES)
        return F.cross_entropy(loss_fn.center_logits(centers), labels)

    times = []
    warmup = 5  # the first calls pay for page faults of fresh (N, 96) buffers
    for i in range(repeats + warmup):
        feat.grad = None
        _sync(device)
        t = time.perf_counter()
        (literal_loss() if literal else loss_fn(feat, segment)).backward()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def step_seconds(batch: dict, device: str, repeats: int) -> dict:
    """Median wall and process-CPU seconds of a training step without / with the center branch.

    The same model and weights serve both modes (the branch is detached from the segmentor for
    the "without" steps). CPU time is reported beside wall time because on a shared machine
    the wall clock also counts other processes' work.
    """
    torch.manual_seed(0)
    cfg = {
        "model": {"name": "MinkUNet34C", "backend": "auto", "in_channels": 3, "num_classes": NUM_CLASSES},
        "ceco": {"enabled": True, "prior": [1.0] * NUM_CLASSES},  # released head; a prior needs no data
        "loss": [{"name": "cross_entropy", "weight": 1.0}],
    }
    model = build_segmentor(cfg).to(device).train()
    branch = model.aux_losses["ceco"]

    def step(with_branch: bool) -> tuple[float, float]:
        model.aux_losses = nn.ModuleDict({"ceco": branch} if with_branch else {})
        model.zero_grad(set_to_none=True)
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        model(batch)["loss"].backward()
        _sync(device)
        return time.perf_counter() - t, time.process_time() - c

    step(True)  # warm-up: kernel maps, allocator, backend caches
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(repeats):
        for mode in ((False, True) if r % 2 == 0 else (True, False)):
            times[mode].append(step(mode))
    model.aux_losses = nn.ModuleDict({"ceco": branch})

    def med(mode: bool, i: int) -> float:
        return statistics.median(t[i] for t in times[mode])

    return {"without": med(False, 0), "with": med(True, 0), "cpu_without": med(False, 1),
            "cpu_with": med(True, 1), "backend": model.backbone.backend}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="training step on the room at 6 cm (~40 k voxels)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="step repeats per mode (default 5 on CPU, 10 on CUDA)")
    args = parser.parse_args(argv)
    device = args.device
    if device == "cpu":
        torch.set_num_threads(THREADS)
    repeats = args.repeats or (10 if device == "cuda" else 5)

    batch = scene_batch(0.06 if args.quick else 0.02, device)
    voxels = int(batch["coords"].shape[0])
    b_scene = branch_ms(voxels, device)
    b_150k = branch_ms(150_000, device)
    b_literal = branch_ms(150_000, device, literal=True)
    step = step_seconds(batch, device, repeats)
    overhead = 100.0 * (step["with"] - step["without"]) / step["without"]
    cpu_overhead = 100.0 * (step["cpu_with"] - step["cpu_without"]) / step["cpu_without"]
    share = 100.0 * b_scene / 1e3 / step["without"]
    result = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "backend": step["backend"],
        "step_voxels": voxels,
        "step_repeats": repeats,
        "step_s_without_ceco": round(step["without"], 4),
        "step_s_with_ceco": round(step["with"], 4),
        "step_overhead_pct": round(overhead, 2),
        "step_cpu_s_without_ceco": round(step["cpu_without"], 4),
        "step_cpu_s_with_ceco": round(step["cpu_with"], 4),
        "step_cpu_overhead_pct": round(cpu_overhead, 2),
        "branch_ms_at_step_voxels": round(b_scene, 2),
        "branch_share_of_step_pct": round(share, 2),
        "branch_ms_150k": round(b_150k, 2),
        "branch_ms_150k_literal_order": round(b_literal, 2),
    }
    print(f"device {result['device']}, backend {result['backend']}, MinkUNet34C, 200 classes\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| step voxels | {voxels} |")
    print(f"| step s/it without CeCo (median of {repeats}) | {step['without']:.3f} |")
    print(f"| step s/it with CeCo (median of {repeats}) | {step['with']:.3f} |")
    print(f"| overhead, wall clock | {overhead:+.2f} % |")
    print(f"| step CPU s without / with CeCo | {step['cpu_without']:.3f} / {step['cpu_with']:.3f} |")
    print(f"| overhead, process CPU time | {cpu_overhead:+.2f} % |")
    print(f"| center branch alone at {voxels} voxels | {b_scene:.1f} ms ({share:.2f} % of the step) |")
    print(f"| center branch alone at 150 k voxels | {b_150k:.1f} ms |")
    print(f"| same, every point standardized before pooling (the released code's order) | {b_literal:.1f} ms "
          f"({b_literal / b_150k:.2f}×) |")
    write_results("ceco", result)
    return result


if __name__ == "__main__":
    main()
