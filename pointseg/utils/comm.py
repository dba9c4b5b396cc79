"""Process-group queries and collectives that work in a world of one: the only place that asks
``torch.distributed`` whether it is initialized (process groups are set up by
``pointseg.engine.distributed``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def collective_device() -> torch.device:
    """Where tensors must live for the running backend's collectives (CUDA for NCCL)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum``, ``max``, ``mean``); a no-op in a world of one."""
    if not is_distributed():
        return tensor
    if op == "mean":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= get_world_size()
    else:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


class _AllReduceSum(torch.autograd.Function):
    # Written here because torch's differentiable all-reduce (torch.distributed.nn.functional) is
    # deprecated (torch 2.13 warns) and its successor (torch.distributed._functional_collectives) is
    # private and has no autograd in the torch versions this project supports.
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # d(sum_p x_p)/dx_q = I on every process: each one's gradient is the sum of all upstream ones.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum_with_grad(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The sum of ``tensor`` over the processes, differentiable: its backward sums the gradients
    of all processes (the identity in a world of one)."""
    if not is_distributed(group):
        return tensor
    return _AllReduceSum.apply(tensor, group)


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (a one-element list in a world of one)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def error_elsewhere(message: str | None) -> str | None:
    """Every process's error message (None: no error) gathered; returns the first one of another
    process when this one has none, so that all stop together instead of waiting in the next
    collective, and None otherwise. Every process must call it."""
    messages = all_gather_object(message)
    if message is not None:
        return None
    return next((m for m in messages if m is not None), None)
