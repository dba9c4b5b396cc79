"""Lovász-softmax loss over the classes present in the target, ignore label −1.

Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the
optimization of the intersection-over-union measure in neural networks", CVPR 2018 (Alg. 1):
per class c, the errors m_i = |y_ic − p_ic| are sorted in decreasing order and dotted with the
discrete gradient of the Jaccard loss Δ_J along that order (the Lovász extension of Δ_J).
The classes are processed together as columns of one sorted matrix instead of a loop over classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .point import IGNORE_INDEX, at_least_float32, valid_points, zero_loss


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors (Alg. 1, l. 5-9).

    ``gt_sorted`` is (N, C) of 0/1 foreground indicators, each column sorted by decreasing error.
    """
    gts = gt_sorted.sum(0, keepdim=True)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[0] > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    return jaccard


def lovasz_softmax_flat(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Lovász hinge of Δ_J over the classes present in ``target`` (prob (N, K), target (N,))."""
    present = torch.unique(target)
    fg = (target[:, None] == present[None, :]).to(prob)  # (N, C)
    errors = (fg - prob[:, present]).abs()
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    fg_sorted = fg.gather(0, perm)
    return (errors_sorted * lovasz_grad(fg_sorted)).sum(0).mean()


class LovaszLoss(nn.Module):
    """Lovász-softmax (Berman et al. 2018) on softmax probabilities, classes present only."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = valid_points("lovasz", logits, target, self.ignore_index)
        if labelled is None:
            return zero_loss(logits)
        logits, target = labelled
        return lovasz_softmax_flat(F.softmax(at_least_float32(logits), dim=1), target)
