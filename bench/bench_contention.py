"""Training iterations per second of the synthetic config under every CPU setting, idle and busy.

The trainer of ``configs/synthetic/ceco.yaml`` (MinkUNet14S, 5 cm, batch 2, CE + CeCo) on a
generated set of the demo's size (24 scenes: 12 iterations per epoch, so every measurement
crosses an epoch boundary and pays a loader start), timed as the mean of ``STEPS``
``train_step`` calls (data loading included) after ``WARMUP`` steps. Each setting runs in a
process of its own, because some settings live in the environment (the OpenMP wait policy is
read once, when the OpenMP runtime loads) and a process's thread pool would otherwise carry
from one setting to the next:

* ``PyTorch defaults``: ``model.backend=spconv`` (what ``auto`` chose on CPU before), as many
  intra-op threads as cores (torch's default), data loaded in the training process;
* ``config defaults``: the config as it is (``model.backend: auto``, ``train.threads: auto``,
  ``data.num_workers`` of the config);
* hand settings around it: 1 or 2 fixed threads, with or without a loader worker, OpenMP's
  passive wait policy.

Every setting runs idle and beside one competing process (a Python spin loop with no CPU
affinity, killed after the measurement), interleaved over ``REPEATS`` rounds (the order of idle
and busy alternates). ``--against REV`` also runs the trainer of an older commit with its own
defaults (its code checked out into a temporary git worktree, same data).

Targets: idle ``config defaults`` within 1.1× of the fastest idle setting; beside the busy
process at most 1.3× slower than idle; at least 1.5× the iterations per second of commit
``39257a4`` with its defaults. Prints a table and the README lines; writes
``bench/results/contention.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SCENES = 24  # the demo's train split
STEPS, WARMUP, REPEATS = 12, 8, 2  # the warm-up covers the thread tuner's first measurement (7 steps)
SPIN_LIMIT_S = 1800  # the competitor ends itself after this even if this script dies
LEGACY = "39257a4"  # the code of 2026-11-28, the speed the defaults are held against
CONFIG = "configs/synthetic/ceco.yaml"
DEFAULTS = "config defaults"
PYTORCH = "PyTorch defaults"
# name → (config overrides, environment); the environment adds to (or, with None, removes from) os.environ
SETTINGS: dict[str, tuple[list[str], dict[str, str | None]]] = {
    PYTORCH: (["model.backend=spconv", "train.threads=2", "data.num_workers=0"], {}),
    DEFAULTS: ([], {}),
    "torch, 2 threads": (["model.backend=torch", "train.threads=2", "data.num_workers=0"], {}),
    "torch, 1 thread": (["model.backend=torch", "train.threads=1", "data.num_workers=0"], {}),
    "torch, 2 threads + 1 loader worker": (["model.backend=torch", "train.threads=2", "data.num_workers=1"], {}),
    "torch, 1 thread + 1 loader worker": (["model.backend=torch", "train.threads=1", "data.num_workers=1"], {}),
    "torch, 2 threads, OpenMP passive wait": (["model.backend=torch", "train.threads=2", "data.num_workers=0"],
                                              {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def worker(data_root: str, overrides: list[str], run_dir: str, steps: int, warmup: int) -> None:
    """Build the trainer of ``CONFIG`` (of the code on ``sys.path``) and print its seconds per step."""
    import torch

    from pointseg.engine.config import load_config
    from pointseg.engine.trainer import Trainer

    cfg = load_config(str(Path.cwd() / CONFIG), [f"data.root={data_root}", "train.validate=false",
                                                 "train.progress_bar=false", "train.iterations=100000", *overrides])
    trainer = Trainer(cfg, run_dir, device="cpu")
    # The trainer's own step, thread tuner included (an older trainer has only train_step).
    step = getattr(trainer, "timed_step", trainer.train_step)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    from pointseg.sparse import resolve_backend_name

    tuner = getattr(trainer, "thread_tuner", None)
    threads = f"auto ({tuner.chosen})" if tuner else torch.get_num_threads()
    info = {"seconds": seconds, "threads": threads, "backend": resolve_backend_name(trainer.model.backbone.backend),
            "num_workers": int(cfg.data.num_workers), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if hasattr(trainer, "close"):
        trainer.close()
    print("RESULT " + json.dumps(info), flush=True)


def start_competitor() -> subprocess.Popen:
    """One process spinning on whichever core the scheduler gives it."""
    code = f"import time\nend = time.time() + {SPIN_LIMIT_S}\nwhile time.time() < end:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)  # let it start spinning
    return proc


def measure(code_root: Path, data_root: Path, run_dir: Path, overrides: list[str], env: dict[str, str | None]) -> dict:
    """One setting in a fresh process of the code under ``code_root``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    full_env = {k: v for k, v in os.environ.items() if k not in env or env[k] is not None}
    full_env.update({k: v for k, v in env.items() if v is not None})
    full_env["PYTHONPATH"] = str(code_root)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--data", str(data_root), "--run-dir",
           str(run_dir), "--steps", str(STEPS), "--warmup", str(WARMUP), "--", *overrides]
    out = subprocess.run(cmd, cwd=code_root, env=full_env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"setting {overrides} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def legacy_worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)
    return where


def main() -> dict:
    from bench_profile import load_average, make_synthetic_data
    from common import write_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default=LEGACY, help="an older commit to run with its own defaults ('' to skip)")
    ap.add_argument("--only", nargs="*", help="names of settings to run (default all)")
    ap.add_argument("--data", type=Path, help="a preprocessed train set to reuse (default: generated here)")
    args = ap.parse_args()
    print(f"load average at start: {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="bench_contention_"))
    settings = {n: s for n, s in SETTINGS.items() if not args.only or n in args.only or n == DEFAULTS}
    roots = {n: ROOT for n in settings}
    legacy_name = None
    try:
        data_root = args.data or make_synthetic_data(work, SCENES)
        if args.against:
            legacy_name = f"commit {args.against}, its defaults"
            roots[legacy_name] = legacy_worktree(args.against, work / "legacy")
            settings[legacy_name] = ([], {"OMP_WAIT_POLICY": None})
        times: dict[str, dict[str, list[float]]] = {n: {"idle": [], "busy": []} for n in settings}
        info: dict[str, dict] = {}
        for r in range(REPEATS):
            for name, (overrides, env) in settings.items():
                for condition in (("idle", "busy") if r % 2 == 0 else ("busy", "idle")):
                    competitor = start_competitor() if condition == "busy" else None
                    try:
                        result = measure(roots[name], data_root, work / "run", overrides, env)
                    finally:
                        if competitor is not None:
                            competitor.terminate()
                            competitor.wait(timeout=10)
                    times[name][condition].append(result.pop("seconds"))
                    info[name] = result
                    print(f"  round {r + 1}, {name}, {condition}: {times[name][condition][-1]:.3f} s/it", flush=True)
    finally:
        if legacy_name is not None and (work / "legacy").exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "legacy")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    rows = {}
    for name in settings:
        idle, busy = (statistics.median(times[name][c]) for c in ("idle", "busy"))
        rows[name] = {**info[name], "idle_s": idle, "busy_s": busy, "busy_over_idle": busy / idle,
                      "idle_all": times[name]["idle"], "busy_all": times[name]["busy"]}
    best = min(rows, key=lambda n: rows[n]["idle_s"])
    d = rows[DEFAULTS]
    over_best = d["idle_s"] / rows[best]["idle_s"]
    print(f"\nsynthetic config, seconds per iteration (mean of {STEPS} steps, median of {REPEATS} rounds; "
          f"{os.cpu_count()} cores):\n")
    print("| setting | backend | threads | loader workers | idle s/it | idle it/s | busy s/it | busy / idle |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['backend']} | {r['threads']} | {r['num_workers']} | {r['idle_s']:.3f} | "
              f"{1 / r['idle_s']:.2f} | {r['busy_s']:.3f} | {r['busy_over_idle']:.2f}× |")
    print("\nREADME lines:")
    print(f"| **Training** synthetic config, idle: the defaults ({d['backend']}, {d['threads']} threads, "
          f"{d['num_workers']} loader workers) against the fastest setting ({best}) (`bench_contention.py`) | "
          f"{1 / d['idle_s']:.2f} / {1 / rows[best]['idle_s']:.2f} it/s: {over_best:.2f}× | ≤ 1.1× "
          f"{'✔' if over_best <= 1.1 else '✘'} |")
    print(f"| same beside one competing busy process: slowdown against idle | {d['busy_over_idle']:.2f}× | ≤ 1.3× "
          f"{'✔' if d['busy_over_idle'] <= 1.3 else '✘'} |")
    result = {"settings": rows, "defaults_over_best_idle": over_best, "best_idle": best,
              "target_over_best": 1.1, "target_busy_over_idle": 1.3, "load_average_end": load_average()}
    if legacy_name is not None:
        speedup = rows[legacy_name]["idle_s"] / d["idle_s"]
        print(f"| same, idle: commit {args.against} with its defaults / today's defaults | "
              f"{1 / rows[legacy_name]['idle_s']:.2f} / {1 / d['idle_s']:.2f} it/s: {speedup:.2f}× | ≥ 1.5× "
              f"{'✔' if speedup >= 1.5 else '✘'} |")
        result["speedup_over_legacy"] = speedup
    print(f"\nload average at end: {load_average()}")
    write_results("contention", result)
    return result


if __name__ == "__main__":
    if "--worker" in sys.argv:
        wp = argparse.ArgumentParser()
        wp.add_argument("--worker", action="store_true")
        wp.add_argument("--data")
        wp.add_argument("--run-dir")
        wp.add_argument("--steps", type=int)
        wp.add_argument("--warmup", type=int)
        wp.add_argument("overrides", nargs="*")
        a = wp.parse_args()
        worker(a.data, a.overrides, a.run_dir, a.steps, a.warmup)
    else:
        main()
