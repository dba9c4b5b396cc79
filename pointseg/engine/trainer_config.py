"""The ``train`` section the ``Trainer`` reads (its own module, so that the config schema can
import it without importing the trainer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pointseg.utils.schema import non_negative, param, positive


def _threads(v: Any) -> str | None:
    if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None
    return "must be a positive integer, auto, or null"


def _sync_bn(v: Any) -> str | None:
    return None if v in (True, False, "auto") else "must be true, false or auto"


@dataclass
class TrainConfig:
    """The ``train`` section: length, optimization options, logging, validation and checkpoints."""

    iterations: int = param(60000, "[LG] max_epoch 400: 400 epochs of the 1201 train scenes at 8 per step", positive)
    accumulate: int = param(1, "[LG] iter_size: micro-batches per optimizer step", positive)
    grad_clip: Optional[float] = param(None, "[ours] max gradient L2 norm; null: off (clipping changes the optimization the lr was tuned for)", positive)
    amp: bool = param(False, "[ours] autocast (float16 on CUDA, bfloat16 on CPU) + GradScaler, which skips steps whose gradients overflow; the center branch and the torch backend's convolutions stay float32; off: fp32, the same arithmetic on CPU and GPU")
    sync_bn: Any = param("auto", "[LG] auto: the backbone's BatchNorms synchronized when more than one GPU trains (the center branch's stays per process, [released]); true | false", _sync_bn)
    find_unused_parameters: bool = param(False, "[PyTorch default] DistributedDataParallel option; true only for a model with parameters some steps leave unused")
    log_every: int = param(20, "[ours] iterations between log.jsonl / TensorBoard records: a curve of 3000 points over 60000 iterations", positive)
    console_every: int = param(100, "[ours] iterations between console lines (the progress bar shows every iteration)", positive)
    validate: bool = param(True, "[ours] voxel-level val mIoU when DATA/val exists; best.pth follows it")
    val_every: int = param(2000, "[ours] iterations between validations (and always at the end); 0: only at the end; [LG] val_freq 400, ours 5x rarer: each is a pass over the whole val split", non_negative)
    stop_on_val_error: bool = param(False, "[ours] a validation that raises ends the run (after saving last.pth); false: it is reported and logged (val.jsonl, errors.log), training goes on")
    save_every: int = param(1000, "[LG] save_freq: iterations between last.pth saves; 0: only at the end", non_negative)
    snapshot_every: int = param(0, "[ours] also keep checkpoints/iter_<it>.pth every N iterations (collapse curves); 0: off, each is a full checkpoint", non_negative)
    progress_bar: bool = param(True, "[ours] a tqdm bar on the console; false where the console goes to a log file")
    threads: Any = param(
        "auto",
        "[ours] torch's intra-op CPU threads: auto = chosen online on CPU among all usable cores (shared among "
        "torchrun's processes, less data.num_workers), half of them and one: the fastest per point over a few timed "
        "steps, re-measured every threads_period steps, so a busy machine does not stall two threads at every "
        "barrier (pointseg.engine.threads); an int: fixed, and every step's arithmetic with it (bit-exact runs); "
        "null: leave the process's setting",
        _threads,
    )
    threads_period: int = param(200, "[ours] steps between two measurements of the thread counts (train.threads: auto); each costs a few steps at the slower counts", positive)
