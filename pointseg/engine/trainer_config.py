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
    accumulate: int = param(1, "micro-batches per optimizer step", positive)
    grad_clip: Optional[float] = param(None, "max gradient L2 norm; null: off", positive)
    amp: bool = param(False, "fp16 autocast + GradScaler (CUDA only)")
    sync_bn: Any = param("auto", "[LG] auto: SyncBatchNorm when more than one GPU trains; true | false", _sync_bn)
    find_unused_parameters: bool = param(False, "DistributedDataParallel option")
    log_every: int = param(20, "iterations between log.jsonl / TensorBoard records", positive)
    console_every: int = param(100, "iterations between console lines", positive)
    validate: bool = param(True, "voxel-level val mIoU when DATA/val exists; best.pth follows it")
    val_every: int = param(2000, "iterations between validations (and always at the end); 0: only at the end", non_negative)
    stop_on_val_error: bool = param(False, "[ours] a validation that raises ends the run (after saving last.pth); false: it is reported and logged (val.jsonl, errors.log), training goes on")
    save_every: int = param(1000, "iterations between last.pth saves; 0: only at the end", non_negative)
    snapshot_every: int = param(0, "also keep checkpoints/iter_<it>.pth every N iterations (collapse curves); 0: off", non_negative)
    progress_bar: bool = param(True, "a tqdm bar on the console")
    threads: Any = param(
        "auto",
        "[ours] torch's intra-op CPU threads: auto = usable cores (shared among torchrun's processes) minus "
        "data.num_workers, at least 1, so compute and loaders do not compete (on a busy 2-core machine two "
        "threads stall 5-18x); an int; null: leave the process's setting",
        _threads,
    )
