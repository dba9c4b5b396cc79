"""The second long-tail study (`make study`): pilot, positive controls, converged runs, power.

    python tools/study_v2.py [--out outputs/study2] [--results docs/study/v2] [--jobs 2] [--commit]

Design and decision rule: docs/study.md ("Second study"), fixed before the runs and held as data
in pointseg.analysis.study_v2. Steps:

1. the long-tailed benchmark in the rooms of DESIGN['preset'] (tools/make_longtail_scannet.py --preset), preprocessed;
2. the pilot: CE and CE + CeCo, seeds 0-2, at the schedule under test; from them
   ``RESULTS/pilot.json``: whether CE's val tail mIoU has converged (gains < 2 points over the
   last third of training) and how many seeds the rule needs to see a 4.6-point tail gain with
   80 % power. A schedule that has not converged stops the study here;
3. every arm for that many seeds (the pilot's runs are the first seeds of their arms): train,
   evaluate val (and the post-hoc arms on the same checkpoints), measure the collapse on the train
   split, and write the run's small summary ``RESULTS/<arm>_seed<s>.json``, committed at once with
   ``--commit``. A run whose summary exists is skipped: the study continues where it stopped, on
   this machine or another;
4. the decision rule and the report block of docs/study.md.

Runs go ``--jobs`` at a time; each chooses its own thread count (``train.threads: auto``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from steps import ROOT, run, run_parallel, tool

from pointseg.analysis.collapse_run import checkpoint_iteration
from pointseg.analysis.study_v2 import ARMS, DESIGN, POSTHOC, decide, load_summaries, pilot_summary, summarize_run
from pointseg.analysis.study_v2_report import write_report
from pointseg.engine.trainer import CHECKPOINT_DIR, LAST
from pointseg.utils.io import atomic_write_text


def git_commit_id() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def commit_files(paths: list[Path], message: str) -> None:
    """Commit ``paths`` (and nothing else that is staged) in this checkout, unless they are unchanged."""
    rel = [str(p.relative_to(ROOT)) for p in paths]
    subprocess.run(["git", "-C", str(ROOT), "add", "--", *rel], check=True)
    unchanged = subprocess.run(["git", "-C", str(ROOT), "diff", "--cached", "--quiet", "--", *rel]).returncode == 0
    if unchanged:  # a resumed driver rewrites a reading identical to the committed one
        return
    subprocess.run(["git", "-C", str(ROOT), "commit", "-q", "-m", message, "--", *rel], check=True)


def publish(results: Path, doc: Path, pilot: dict, minutes: float) -> None:
    """The decision rule on the committed summaries: ``RESULTS/decision.json`` and the report block of ``doc``."""
    runs = load_summaries(results)
    decision = decide(runs, seeds=pilot.get("seeds"))
    atomic_write_text(results / "decision.json", json.dumps(decision, indent=1) + "\n")
    print(f"{decision['verdict']}\nwrote {write_report(runs, pilot, decision, doc, minutes)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/study2"), help="data and run folders (not committed)")
    ap.add_argument("--results", type=Path, default=Path("docs/study/v2"), help="the committed run summaries")
    ap.add_argument("--doc", type=Path, default=Path("docs/study.md"))
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--commit", action="store_true", help="git-commit every run summary as it is written")
    ap.add_argument("--pilot-only", action="store_true", help="stop after the pilot")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the results block from the committed summaries (an interim reading "
                         "until every seed is in)")
    args = ap.parse_args()
    out, results, doc = (p if p.is_absolute() else ROOT / p for p in (args.out, args.results, args.doc))
    out = out / DESIGN["preset"]  # data and runs of one benchmark never mix with another's
    data = out / "data"
    results.mkdir(parents=True, exist_ok=True)
    commit = git_commit_id()
    started = time.perf_counter()
    timing = results / "timing.json"
    before = json.loads(timing.read_text())["minutes"] if timing.exists() else 0.0

    def save_time() -> float:
        minutes = before + (time.perf_counter() - started) / 60
        atomic_write_text(timing, json.dumps({"minutes": minutes, "cores": os.cpu_count()}) + "\n")
        return minutes

    if args.report_only:
        publish(results, doc, json.loads((results / "pilot.json").read_text()), before)
        return

    if not (data / "stats.json").exists():
        run(tool("make_longtail_scannet", "--out", out / "raw", "--preset", DESIGN["preset"],
                 "--seed", DESIGN["data_seed"], "--no-progress"), "study")
        run(tool("preprocess_scannet200", "--raw", out / "raw", "--out", data, "--workers", 2), "study")

    def runs_for(arms, seeds, iterations: int) -> None:
        jobs, where = [], {}
        # seed by seed, every arm of a seed before the next seed: a study cut short across sessions
        # has every arm at the same seeds (a paired comparison is possible at any point)
        for seed in seeds:
            for arm in arms:
                summary = results / f"{arm}_seed{seed}.json"
                if summary.exists():
                    continue
                run_dir = out / "runs" / f"{arm}_seed{seed}"
                last = run_dir / CHECKPOINT_DIR / LAST
                steps = []
                if not last.exists() or (checkpoint_iteration(last) or 0) < iterations:
                    steps.append(tool(
                        "train", "--config", ARMS[arm][0], "--out", run_dir, "--resume", f"data.root={data}",
                        f"data.batch_size={DESIGN['batch_size']}", f"seed={seed}", f"train.iterations={iterations}",
                        f"train.val_every={DESIGN['val_every']}", f"train.save_every={DESIGN['val_every']}",
                        "train.snapshot_every=1000", "train.progress_bar=false"))
                if not (run_dir / "eval_val" / "metrics.json").exists():
                    steps.append(tool("test", "--checkpoint", last, "--split", "val", "--out", run_dir / "eval_val",
                                      f"data.root={data}"))
                for post, (trained, extra, _) in POSTHOC.items():
                    if trained == arm and not (run_dir / f"eval_val_{post}" / "metrics.json").exists():
                        steps.append(tool("test", "--checkpoint", last, "--split", "val", *extra,
                                          "--out", run_dir / f"eval_val_{post}", f"data.root={data}"))
                if not (run_dir / "collapse" / "collapse.json").exists():
                    steps.append(tool("collapse", "--checkpoint", last, "--split", "train",
                                      "--out", run_dir / "collapse", f"data.root={data}"))
                name = f"{arm} seed {seed}"
                where[name] = (arm, seed, run_dir, summary, time.perf_counter())
                jobs.append((name, run_dir / "study.log", steps))

        def finished(name: str) -> None:
            arm, seed, run_dir, summary, t0 = where[name]
            record = summarize_run(run_dir, arm, seed, commit, (time.perf_counter() - t0) / 60)
            atomic_write_text(summary, json.dumps(record, indent=1) + "\n")
            save_time()
            if args.commit:
                commit_files([summary, timing], f"study v2: {name} (val tail mIoU {record['val']['tail']:.1f})")

        run_parallel(jobs, args.jobs, on_done=finished)

    pilot_file = results / "pilot.json"
    runs_for(DESIGN["pilot_arms"], DESIGN["pilot_seeds"], DESIGN["pilot_iterations"])
    pilot = pilot_summary(load_summaries(results))
    atomic_write_text(pilot_file, json.dumps(pilot, indent=1) + "\n")
    if args.commit:
        commit_files([pilot_file], "study v2: the pilot's reading")
    print(f"pilot: {json.dumps(pilot)}")
    if not pilot["converged"]:
        raise SystemExit(f"study: CE has not converged at {pilot['iterations']} iterations by the pilot's criterion; "
                         "the design says to double the schedule and run the pilot again")
    if not args.pilot_only:
        runs_for(list(ARMS), range(pilot["seeds"]), pilot["iterations"])
    publish(results, doc, pilot, save_time())


if __name__ == "__main__":
    sys.exit(main())
