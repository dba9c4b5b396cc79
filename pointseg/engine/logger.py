"""Run logging: ``log.jsonl``, TensorBoard events, console lines and a tqdm progress bar.

Every scalar the model returns is logged under its own name; nothing here knows loss names.
``log.jsonl`` holds one JSON object per logged training iteration (``iteration``, ``lr``, every
loss term, timings); validation results go to ``val.jsonl`` (``{"iteration", "error"}`` for a
validation that failed, its traceback in ``errors.log``). Only the main process logs.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm import tqdm

from pointseg.utils.io import atomic_write_text

TRAIN_LOG = "log.jsonl"
VAL_LOG = "val.jsonl"
ERRORS_LOG = "errors.log"


def _json_value(v: Any) -> Any:
    v = float(v)
    return v if math.isfinite(v) else str(v)  # JSON has no NaN / inf


def truncate_jsonl(path: str | os.PathLike, last_iteration: int) -> None:
    """Drop lines logged after ``last_iteration`` (a resumed run redoes those iterations)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if int(record.get("iteration", 0)) <= last_iteration:
            keep.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, process max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class RunLogger:
    """Writes the run folder's logs; a silent no-op on non-main processes (``enabled=False``)."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        total_iterations: int,
        start_iteration: int = 0,
        enabled: bool = True,
        console_every: int = 20,
        progress_bar: bool = True,
        revalidate: bool = False,
    ) -> None:
        """``start_iteration``: the checkpoint a resumed run starts from (records after it are
        dropped); ``revalidate``: that iteration's validation is redone, so its record goes too."""
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.console_every = max(1, console_every)
        self._writer = None
        self._bar = None
        self._files: dict[str, Any] = {}
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        keep = {TRAIN_LOG: start_iteration, VAL_LOG: start_iteration - 1 if revalidate else start_iteration}
        for name, last in keep.items():
            truncate_jsonl(self.run_dir / name, last)
            self._files[name] = open(self.run_dir / name, "a", encoding="utf-8")
        # purge_step hides the events a killed run wrote after its last checkpoint (the first
        # step this run logs is start_iteration + 1).
        self._writer = SummaryWriter(str(self.run_dir), purge_step=start_iteration + 1 if start_iteration else None)
        self._bar = tqdm(
            total=total_iterations,
            initial=start_iteration,
            desc="train",
            dynamic_ncols=True,
            disable=not progress_bar,
            file=sys.stderr,
        )

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        f = self._files[name]
        try:
            f.write(json.dumps(record) + "\n")
            f.flush()
        except OSError as e:  # e.g. a full disk: say which file
            raise OSError(e.errno, e.strerror, str(self.run_dir / name)) from e

    def log_train(self, iteration: int, lr: float, losses: Mapping[str, float], extra: Mapping[str, float]) -> None:
        """One iteration: every loss term by name, the learning rate, timings and memory."""
        if not self.enabled:
            return
        record = {"iteration": iteration, "lr": lr}
        record.update({k: _json_value(v) for k, v in losses.items()})
        record.update({k: _json_value(v) for k, v in extra.items()})
        self._append(TRAIN_LOG, record)
        for k, v in losses.items():
            self._writer.add_scalar(f"train/{k}", float(v), iteration)
        self._writer.add_scalar("train/lr", lr, iteration)
        for k, v in extra.items():
            self._writer.add_scalar(f"train/{k}", float(v), iteration)
        if iteration % self.console_every == 0:
            terms = " ".join(f"{k}={float(v):.4f}" for k, v in losses.items())
            self.console(f"it {iteration} lr={lr:.3g} {terms} " + " ".join(f"{k}={float(v):.3g}" for k, v in extra.items()))

    def log_val(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        """Scalar validation metrics (non-scalars such as per-class arrays are skipped)."""
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or (hasattr(v, "ndim") and v.ndim == 0)}
        self._append(VAL_LOG, {"iteration": iteration, **{k: _json_value(v) for k, v in scalars.items()}})
        for k, v in scalars.items():
            self._writer.add_scalar(f"val/{k}", v, iteration)
        self.console(f"val it {iteration} " + " ".join(f"{k}={v:.4f}" for k, v in scalars.items()))

    def log_val_error(self, iteration: int, message: str, details: str) -> None:
        """A validation that failed: ``message`` (one line) in ``val.jsonl``, ``details`` (the
        traceback) appended to ``errors.log``."""
        if not self.enabled:
            return
        self._append(VAL_LOG, {"iteration": iteration, "error": message})
        with open(self.run_dir / ERRORS_LOG, "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n{details.rstrip()}\n\n")

    def step(self, n: int = 1) -> None:
        """Advance the progress bar (its ETA is the remaining iterations at the current rate)."""
        if self._bar is not None:
            self._bar.update(n)

    def console(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._writer = self._bar = None
