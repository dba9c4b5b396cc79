"""torchrun process groups, seeding, SyncBatchNorm (rank queries and collectives: ``pointseg.utils.comm``).

A plain ``python tools/train.py`` is a world of one; under ``torchrun`` the environment variables
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` select the process's place (multi-node included).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def worker_init_fn(worker_id: int) -> None:
    """Seed python and numpy in a data-loader worker from the seed torch gave it.

    torch derives each worker's seed from the loader's generator (seeded per epoch by the
    trainer), so workers are reproducible; numpy and python would otherwise repeat the parent's
    state in every worker.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


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
