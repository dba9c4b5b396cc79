"""Soft multi-class Dice loss over the classes present in the target, ignore label −1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .point import IGNORE_INDEX, at_least_float32, valid_points, zero_loss


class DiceLoss(nn.Module):
    """``1 − mean_c (2 Σ p_c y_c + s) / (Σ p_c + Σ y_c + s)`` over classes c present in the target.

    Restricting to present classes keeps the 200-class average from being dominated by the many
    classes absent from a batch: with smoothing their Dice is s / (Σp + s), close to 1 whenever
    they get little probability, and 0/0 without it.
    """

    def __init__(self, smooth: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"dice: smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = valid_points("dice", logits, target, self.ignore_index)
        if labelled is None:
            return zero_loss(logits)
        logits, target = labelled
        num_classes = logits.shape[1]
        prob = F.softmax(at_least_float32(logits), dim=1)
        onehot = F.one_hot(target, num_classes).to(prob)
        inter = (prob * onehot).sum(0)
        denom = prob.sum(0) + onehot.sum(0)
        dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
        present = onehot.sum(0) > 0
        return 1.0 - dice[present].mean()
