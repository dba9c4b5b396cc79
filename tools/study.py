"""The long-tail study (`make study`): does CeCo help the tail of a benchmark 2 CPU cores can learn?

    python tools/study.py [--out outputs/study] [--doc docs/study.md] [--seeds 0 1 2] [--jobs 2]

Generates the long-tailed benchmark (tools/make_longtail_scannet.py) and preprocesses it, then for
every arm of pointseg.analysis.study.ARMS and every seed: trains (configs/longtail/<arm>.yaml,
snapshots for the collapse curves), evaluates val (tools/test.py) and measures the collapse on the
train split (tools/collapse.py). Runs go ``--jobs`` at a time with one thread each. Finished steps
are skipped on a rerun. The results block of docs/study.md and its pictures are then written from
the run folders; the decision rule and the reading of the results around it are kept.

`--benchmark scannet200-synthetic` runs the same arms on the full 200-class synthetic ScanNet
(configs/synthetic), sized for a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from steps import ROOT, run, run_parallel, tool

from pointseg.analysis.collapse_run import checkpoint_iteration
from pointseg.analysis.study import ARMS, StudyResults, compute_floors, load_run, write_report
from pointseg.engine.trainer import CHECKPOINT_DIR, LAST, snapshot_name
from pointseg.synthetic.longtail import LOOKALIKE_PAIR, class_indices
from pointseg.utils.io import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/study"))
    ap.add_argument("--doc", type=Path, default=Path("docs/study.md"))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--snapshot-every", type=int, default=200, help="checkpoints for the collapse curves")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--benchmark", choices=("longtail", "scannet200-synthetic"), default="longtail")
    args = ap.parse_args()
    out = args.out if args.out.is_absolute() else ROOT / args.out
    doc = args.doc if args.doc.is_absolute() else ROOT / args.doc
    raw, data = out / "raw", out / "data"
    start = time.perf_counter()

    if not (data / "stats.json").exists():
        if args.benchmark == "longtail":
            run(tool("make_longtail_scannet", "--out", raw, "--seed", args.data_seed), "study")
        else:
            run(tool("make_synthetic_scannet", "--out", raw, "--seed", args.data_seed), "study")
        run(tool("preprocess_scannet200", "--raw", raw, "--out", data, "--workers", 2), "study")

    jobs = []
    configs = {arm: ARMS[arm][0] if args.benchmark == "longtail" else ARMS[arm][0].replace("longtail", "synthetic")
               for arm in args.arms}
    for arm, config in configs.items():
        for seed in args.seeds:
            run_dir = out / "runs" / f"{arm}_seed{seed}"
            steps = []
            last = run_dir / CHECKPOINT_DIR / LAST
            if not last.exists() or (checkpoint_iteration(last) or 0) < args.iterations:  # a killed run continues
                steps.append(tool("train", "--config", config, "--out", run_dir, "--resume", f"data.root={data}",
                                  f"seed={seed}", f"train.iterations={args.iterations}",
                                  f"train.snapshot_every={args.snapshot_every}", "train.progress_bar=false"))
            if not (run_dir / "eval_val" / "metrics.json").exists():
                steps.append(tool("test", "--checkpoint", last, "--split", "val",
                                  "--out", run_dir / "eval_val", f"data.root={data}"))
            if not (run_dir / "collapse" / "collapse.json").exists():
                snaps = [run_dir / CHECKPOINT_DIR / snapshot_name(it)
                         for it in range(args.snapshot_every, args.iterations + 1, args.snapshot_every)]
                steps.append(tool("collapse", "--checkpoint", *snaps, "--split", "train", "--out", run_dir / "collapse",
                                  f"data.root={data}"))
            jobs.append((f"{arm} seed {seed}", run_dir / "study.log", steps))
    # Wall minutes over every invocation (a stopped study resumes): saved after each finished job,
    # so an interrupted invocation keeps the time of the jobs it finished.
    timing = out / "timing.json"
    before = float(timing.read_text()) if timing.exists() else 0.0

    def save_minutes(_job: str = "") -> float:
        minutes = before + (time.perf_counter() - start) / 60
        atomic_write_text(timing, f"{minutes}\n")
        return minutes

    run_parallel(jobs, args.jobs, env={"OMP_NUM_THREADS": "1"}, on_done=save_minutes)

    results = StudyResults()
    for arm in args.arms:
        results.runs[arm] = [load_run(out / "runs" / f"{arm}_seed{s}", arm, s) for s in args.seeds]
    classes = class_indices().tolist() if args.benchmark == "longtail" else None
    results.floors = compute_floors(data, classes, configs)
    minutes = save_minutes()
    results.setting = {
        "train_scenes": len(list((data / "train").iterdir())), "val_scenes": len(list((data / "val").iterdir())),
        "data_seed": args.data_seed, "iterations": args.iterations, "seeds": args.seeds, "minutes": minutes,
        "cores": os.cpu_count(), "parallel": args.jobs, "num_classes": len(classes) if classes else 200,
    }
    print(f"wrote {write_report(results, doc, LOOKALIKE_PAIR)}")


if __name__ == "__main__":
    main()
