"""torchrun process groups, seeding, SyncBatchNorm (rank queries and collectives: ``pointseg.utils.comm``).

A plain ``python tools/train.py`` is a world of one; under ``torchrun`` the environment variables
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` select the process's place (multi-node included).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from pointseg.sparse import SparseTensor


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), once.

    ``device`` forces ``cpu``/``cuda``; by default CUDA is used when available. Asking for CUDA
    where torch has no CUDA device is a ValueError (a user error, not a traceback).
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch has no CUDA device")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy's legacy global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Signals that ask a training to stop after its step and save (``pointseg.cli.train``): a
# terminal's Ctrl-C, a scheduler's preemption or cancel (SIGTERM), and the warning SLURM sends
# ahead of the time limit with ``--signal=USR1@<seconds>``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def worker_init_fn(worker_id: int) -> None:
    """Make a data-loader worker ignore the stop signals, and seed python and numpy from the seed
    torch gave it.

    A scheduler (SLURM, systemd, ``kill -TERM -- -PGID``) and a terminal signal every process of
    the job, the workers too; a worker that died of it (torch's own SIGTERM handler ends it) would
    end the training before it saved. The main process decides and stops its workers itself
    (:func:`shutdown_workers`). torch derives each worker's seed from the loader's generator
    (seeded per epoch by the trainer), so workers are reproducible; numpy and python would
    otherwise repeat the parent's state in every worker.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # Held back since the fork (stop_signals_deferred); a signal that came meanwhile is dropped.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold the stop signals back while data-loader workers start (around ``iter(loader)``).

    A forked worker inherits the mask, so a signal that reaches it before :func:`worker_init_fn`
    ran stays pending and is then ignored, instead of ending it through the handler torch
    installs first; the main process gets its own signals when the block ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def shutdown_workers(batches: Any) -> None:
    """Stop the worker processes of a DataLoader iterator now, not whenever it is collected.

    torch asks them to finish (the iterator's ``_shutdown_workers``, which its ``__del__`` calls
    too) and ends one that does not with SIGTERM, which workers ignore (:func:`worker_init_fn`):
    one still alive after that, stuck in a sample, is killed.
    """
    workers = list(getattr(batches, "_workers", ()))
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()


class SparseSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm that, like ``pointseg.sparse.BatchNorm``, also takes a SparseTensor."""

    def forward(self, x: torch.Tensor | SparseTensor) -> torch.Tensor | SparseTensor:  # type: ignore[override]
        if hasattr(x, "replace_feats"):
            return x.replace_feats(super().forward(x.feats))
        return super().forward(x)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by a SyncBatchNorm with the same parameters and statistics.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would turn the sparse ``BatchNorm`` (a
    ``BatchNorm1d`` whose forward takes a SparseTensor) into a layer that only takes tensors;
    here sparse layers become :class:`SparseSyncBatchNorm`. State-dict keys do not change, so
    checkpoints load into models with plain BatchNorm. Statistics are synchronized on CUDA only.
    """
    from pointseg.sparse import BatchNorm as SparseBatchNorm

    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            cls = SparseSyncBatchNorm if isinstance(child, SparseBatchNorm) else nn.SyncBatchNorm
            sync = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
