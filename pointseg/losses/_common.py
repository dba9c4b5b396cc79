"""Helpers shared by the segmentation losses: input checks and the ignore-label mask."""

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
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and int64 targets of the labelled points; a label outside 0..K-1 is an error."""
    target = target.long()
    keep = target != ignore_index
    logits, target = logits[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(
            f"labels must be in 0..{logits.shape[1] - 1} or {ignore_index} (ignore); "
            f"got range {int(target.min())}..{int(target.max())}"
        )
    return logits, target


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph, for batches without a labelled point (instead of NaN)."""
    return logits.sum() * 0.0


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits (autocast) → float32 for the loss; float32 / float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
