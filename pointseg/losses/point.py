"""The prologue every point loss shares: input checks, the labelled points, and the loss of a batch
without one: a zero with a graph, as NaN would stop training and a constant cannot backpropagate."""

from __future__ import annotations

import torch

from pointseg.meta import IGNORE_INDEX  # noqa: F401 (the losses' default ignore label)


def check_logits_target(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a ValueError naming the loss when logits (N, K) and target (N,) do not fit."""
    if logits.dim() != 2:
        raise ValueError(f"{name}: logits must be (N, K), got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{name}: target must be (N,) with N = {logits.shape[0]}, got shape {tuple(target.shape)}"
        )
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name}: target must be an integer tensor, got {target.dtype}")


def valid_points(
    name: str, logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Logits and int64 targets of the labelled points, or None when no point is labelled.

    A label that is neither a class (0..K-1) nor ``ignore_index`` is an error, not ignored: it
    means the label space and the model disagree, which silently skipping points would hide.
    """
    check_logits_target(name, logits, target)
    target = target.long()
    keep = target != ignore_index
    logits, target = logits[keep], target[keep]
    if target.numel() == 0:
        return None
    num_classes = logits.shape[1]
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name}: label {bad} is out of range for {num_classes} classes "
            f"(labels must be in 0..{num_classes - 1} or {ignore_index} to ignore)"
        )
    return logits, target


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """0 connected to ``logits`` (zero gradient), whatever their values: sums no element."""
    return logits[:0].sum()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits (autocast) → float32 for the loss; float32 / float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
