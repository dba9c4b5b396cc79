"""Training iterations of the synthetic config per second, idle and beside a busy process.

The trainer of ``configs/synthetic/ceco.yaml`` (MinkUNet14S, 5 cm, batch 2) on a generated set
of the demo's size (24 scenes of ~40 k vertices: 12 iterations per epoch, so every measurement
crosses one epoch boundary and pays one loader start), timed as the mean of ``STEPS``
``train_step`` calls (data loading included) after ``WARMUP`` steps, under settings of
``train.threads`` / ``data.num_workers`` / ``model.backend``:

* ``2 threads, in-process loading``: PyTorch's defaults on 2 cores (backend ``auto``, 2 intra-op
  threads, data loaded in the training process, ``num_workers: 0``);
* ``config``: the config's split (a loader worker, intra-op threads ``auto``: 1 on 2 cores);
* the config without the loader worker, and the config on the ``torch`` backend.

Each setting runs idle and with one competing process (a Python spin loop started here, with no
CPU affinity, killed after the measurement), interleaved over ``REPEATS`` rounds in one process.
Targets: with the competitor at most 1.3× slower than idle (``config``); idle ``config`` at least
1.5× the iterations per second of the PyTorch defaults. Prints a table and the README lines; writes
``bench/results/contention.json``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_profile import CONFIG, load_average, make_synthetic_data  # noqa: E402
from common import write_results  # noqa: E402

from pointseg.engine.config import load_config  # noqa: E402
from pointseg.engine.trainer import Trainer  # noqa: E402

SCENES = 24  # the demo's train split (scenes of bench_profile.VERTICES vertices)
STEPS, WARMUP, REPEATS = 12, 2, 2
SPIN_LIMIT_S = 900  # the competitor ends itself after this even if this script dies
# name → config overrides ([]: the config as it is)
BASELINE = "2 threads, in-process loading"
SETTINGS: dict[str, list[str]] = {
    BASELINE: ["model.backend=auto", "train.threads=2", "data.num_workers=0"],
    "config": [],
    "config, loading in the training process": ["train.threads=1", "data.num_workers=0"],
    "config on the torch backend": ["model.backend=torch"],
}


def start_competitor() -> subprocess.Popen:
    """One process spinning on whichever core the scheduler gives it."""
    code = f"import time\nend = time.time() + {SPIN_LIMIT_S}\nwhile time.time() < end:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)  # let it start spinning
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def seconds_per_step(trainer: Trainer) -> float:
    torch.set_num_threads(trainer.threads)  # another setting may have changed the global pool
    for _ in range(WARMUP):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(STEPS):
        trainer.train_step()
    return (time.perf_counter() - start) / STEPS


def main() -> dict:
    print(f"load average at start: {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="bench_contention_"))
    try:
        data_root = make_synthetic_data(work, SCENES)
        trainers = {}
        for name, overrides in SETTINGS.items():
            cfg = load_config(CONFIG, [f"data.root={data_root}", "train.validate=false", "train.progress_bar=false",
                                       "train.iterations=100000", *overrides])
            trainers[name] = Trainer(cfg, work / "runs" / name.replace(" ", "_").replace(",", ""), device="cpu")
        times: dict[str, dict[str, list[float]]] = {n: {"idle": [], "busy": []} for n in trainers}
        for r in range(REPEATS):
            for name, trainer in trainers.items():
                for condition in (("idle", "busy") if r % 2 == 0 else ("busy", "idle")):
                    competitor = start_competitor() if condition == "busy" else None
                    try:
                        times[name][condition].append(seconds_per_step(trainer))
                    finally:
                        if competitor is not None:
                            stop(competitor)
                    print(f"  round {r + 1}, {name}, {condition}: {times[name][condition][-1]:.3f} s/it", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = {}
    for name, trainer in trainers.items():
        idle, busy = (statistics.median(times[name][c]) for c in ("idle", "busy"))
        rows[name] = {"backend": trainer.model.backbone.backend, "threads": trainer.threads,
                      "num_workers": trainer.num_workers, "idle_s": idle, "busy_s": busy, "busy_over_idle": busy / idle,
                      "idle_all": times[name]["idle"], "busy_all": times[name]["busy"]}
    speedup = rows[BASELINE]["idle_s"] / rows["config"]["idle_s"]
    print(f"\nsynthetic config, seconds per iteration (mean of {STEPS} steps, median of {REPEATS} rounds; "
          f"{os.cpu_count()} cores):\n")
    print("| setting | backend | threads | workers | idle s/it | it/s | busy s/it | busy / idle |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['backend']} | {r['threads']} | {r['num_workers']} | {r['idle_s']:.3f} | "
              f"{1 / r['idle_s']:.2f} | {r['busy_s']:.3f} | {r['busy_over_idle']:.2f}× |")
    c, b = rows["config"], rows[BASELINE]
    print("\nREADME lines:")
    print(f"| **Training** synthetic config, iterations/s on the idle machine: PyTorch's defaults ({b['backend']}, "
          f"{b['threads']} threads, loading in the training process) / the config ({c['threads']} compute thread(s) + "
          f"{c['num_workers']} loader worker(s), `{c['backend']}`) (`bench_contention.py`) | {1 / b['idle_s']:.2f} / "
          f"{1 / c['idle_s']:.2f} it/s: {speedup:.2f}× | ≥ 1.5× {'✔' if speedup >= 1.5 else '✘'} |")
    print(f"| same beside one competing busy process: slowdown against idle, defaults / config | "
          f"{b['busy_over_idle']:.2f}× / {c['busy_over_idle']:.2f}× | ≤ 1.3× {'✔' if c['busy_over_idle'] <= 1.3 else '✘'} |")
    print(f"\nload average at end: {load_average()}")
    result = {"settings": rows, "speedup_config_over_defaults": speedup, "target_speedup": 1.5,
              "target_busy_over_idle": 1.3, "load_average_end": load_average()}
    write_results("contention", result)
    return result


if __name__ == "__main__":
    main()
