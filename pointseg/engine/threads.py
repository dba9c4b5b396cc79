"""How many intra-op CPU threads a training process computes with (``train.threads``).

Measured on 2 cores (``bench/bench_contention.py``, synthetic config): the torch backend computes
1.4× faster on two threads than on one when the machine is idle, but beside one busy process two
OpenMP threads stall at every barrier while the scheduler runs the other process on one of their
cores, and a step takes 3.5× as long as idle, against 1.0× on one thread. OpenMP's passive wait
policy only halves the stall (1.9×) and costs 1.35× when idle; a loader process beside two
threads is itself the competitor. No fixed count wins in both regimes, so ``auto`` measures: it
times a few steps at each candidate count, keeps the fastest per point (all cores unless another
count is clearly faster), and measures again every ``period`` steps, so a run follows the load of
a shared machine.

The thread count changes the order of BatchNorm's reductions, so a run on ``auto`` is exactly
reproducible only while the chosen counts are; an integer ``train.threads`` keeps every step's
arithmetic fixed (the tests and the bit-exact resume guarantee use one).
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import torch


def usable_cores() -> int:
    """Cores this process may run on, shared among torchrun's processes on the node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def candidate_counts(cores: int, num_workers: int) -> list[int]:
    """Thread counts ``auto`` chooses among: all usable cores less the loader workers, half of
    that and one (the counts that differ in how a busy core hurts), fastest-on-idle first."""
    top = max(1, cores - num_workers)
    return sorted({top, max(1, top // 2), 1}, reverse=True)


class ThreadTuner:
    """Chooses ``torch.set_num_threads`` online: probe every candidate for ``probe_steps`` steps,
    keep the lowest median seconds per point, run with it for ``period`` steps, probe again.

    The trainer calls :meth:`before_step` and :meth:`after_step` around every optimizer step.
    """

    def __init__(
        self, candidates: list[int], period: int = 200, probe_steps: int = 3, warmup: int = 1, margin: float = 1.15
    ) -> None:
        if not candidates:
            raise ValueError("ThreadTuner: no candidate thread counts")
        self.candidates = list(candidates)
        self.period, self.probe_steps, self.warmup = int(period), int(probe_steps), int(warmup)
        self.margin = float(margin)
        self.chosen = self.candidates[0]
        self._steps = 0  # steps seen by this tuner (a resumed run starts a fresh one)
        self._plan: list[int] = []  # thread counts of the probe steps still to run
        self._samples: dict[int, list[float]] = {}
        self.history: list[dict[str, Any]] = []  # one record per finished probe

    @property
    def probing(self) -> bool:
        return bool(self._plan)

    def before_step(self) -> int:
        """Set and return the thread count of the coming step."""
        if len(self.candidates) > 1 and not self._plan and self._steps >= self.warmup:
            since = self._steps - self.warmup
            if since % self.period == 0:
                self._plan = [c for c in self.candidates for _ in range(self.probe_steps)]
                self._samples = {c: [] for c in self.candidates}
        threads = self._plan[0] if self._plan else self.chosen
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def after_step(self, seconds: float, points: int) -> None:
        """Record the step that :meth:`before_step` prepared (its wall time and its points)."""
        self._steps += 1
        if not self._plan:
            return
        threads = self._plan.pop(0)
        self._samples[threads].append(seconds / max(1, points))
        if not self._plan:
            per_point = {c: statistics.median(v) for c, v in self._samples.items()}
            fastest = min(per_point, key=per_point.__getitem__)
            # The first candidate (all cores: fastest on an idle machine) is kept unless another
            # count beats it clearly: three steps per count cannot tell a few per cent apart, and
            # what a busy core costs two threads is a factor of two or more.
            first = self.candidates[0]
            self.chosen = first if per_point[first] <= self.margin * per_point[fastest] else fastest
            self.history.append({"step": self._steps, "chosen": self.chosen,
                                 "us_per_point": {c: v * 1e6 for c, v in per_point.items()}})
