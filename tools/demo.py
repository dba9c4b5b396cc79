"""The whole system in one command (`make demo`), on built-in synthetic data, on CPU.

Generates a small version of the long-tailed benchmark (20 ScanNet200 classes, docs/study.md) in
the raw layout, preprocesses it, trains CeCo for a few minutes, evaluates val (per-split table),
writes and validates a test submission, computes the neural-collapse metrics on the train split
and renders one val scene (ground truth beside prediction). Each step is the same command a
researcher runs on the real data; the commands are echoed.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from steps import ROOT, run, tool

step = functools.partial(run, job="demo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"))
    ap.add_argument("--iterations", type=int, default=600, help="training iterations")
    ap.add_argument("--train-scenes", type=int, default=40)
    ap.add_argument("--val-scenes", type=int, default=12)
    ap.add_argument("--test-scenes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out if args.out.is_absolute() else ROOT / args.out
    raw, data, run_dir, ev = out / "raw", out / "data", out / "run", out / "eval"
    start = time.perf_counter()

    step(tool("make_longtail_scannet", "--out", raw, "--train", args.train_scenes, "--val", args.val_scenes,
             "--test", args.test_scenes, "--seed", args.seed))
    step(tool("preprocess_scannet200", "--raw", raw, "--out", data, "--workers", 2))
    step(tool("train", "--config", "configs/longtail/ceco.yaml", "--out", run_dir, "--overwrite", f"data.root={data}",
             f"train.iterations={args.iterations}", f"train.val_every={args.iterations}", f"seed={args.seed}"))
    ckpt = run_dir / "checkpoints" / "last.pth"
    step(tool("test", "--config", run_dir / "config.yaml", "--checkpoint", ckpt, "--split", "val",
             "--out", ev / "val", "--save-predictions", f"data.root={data}"))
    step(tool("test", "--config", run_dir / "config.yaml", "--checkpoint", ckpt, "--split", "test",
             "--out", ev / "test", "--raw", raw, f"data.root={data}"))
    step(tool("validate_submission", ev / "test" / "submission.zip", "--raw", raw))
    step(tool("collapse", "--checkpoint", ckpt, "--split", "train", "--out", out / "collapse", f"data.root={data}"))
    scene = sorted(p.name for p in (data / "val").iterdir() if p.is_dir())[0]
    step(tool("visualize", "--data", data, "--split", "val", "--scene", scene,
             "--predictions", ev / "val" / "predictions", "--out", out / "pictures", "--view", "oblique"))

    metrics = json.loads((ev / "val" / "metrics.json").read_text())
    pct = {k: "–" if metrics[k] is None else f"{100 * metrics[k]:.1f}" for k in
           ("miou", "head_miou", "common_miou", "tail_miou")}
    minutes = (time.perf_counter() - start) / 60
    print(f"\npointseg demo finished in {minutes:.1f} min. Produced under {out}:")
    rows = [
        ("raw synthetic ScanNet (long-tailed benchmark, 20 classes)", raw),
        ("preprocessed scenes + stats.json", data),
        ("training run (config, log.jsonl, TensorBoard, checkpoints)", run_dir),
        (f"val metrics: mIoU {pct['miou']} (head {pct['head_miou']}, common {pct['common_miou']}, "
         f"tail {pct['tail_miou']})", ev / "val" / "metrics.json"),
        ("test submission (validated)", ev / "test" / "submission.zip"),
        ("neural-collapse metrics", out / "collapse" / "collapse.json"),
        ("picture of a val scene: ground truth | prediction | errors", out / "pictures" / f"{scene}.png"),
    ]
    for what, where in rows:
        print(f"  {what:<62} {where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}")


if __name__ == "__main__":
    main()
