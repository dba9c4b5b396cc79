"""Focal loss (Lin et al., ICCV 2017) over labelled points, ignore label −1, optionally class-weighted
(with weights from the training class counts: class-balanced focal, Cui et al., CVPR 2019; the
"C-Focal" row of CeCo's ScanNet200 comparison)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.data.stats import ClassCounts

from .class_balance import resolve_class_weight
from .point import IGNORE_INDEX, at_least_float32, valid_points, zero_loss


class FocalLoss(nn.Module):
    """Mean over labelled points of ``-alpha_y (1 - p_y)^gamma log p_y``.

    ``alpha`` is an optional per-class weight: K values, or a scheme computed from the training
    split's class counts as for ``cross_entropy.class_weight`` (``inverse``, ``inverse_sqrt``,
    ``effective_number`` with ``beta``, over points or scenes: ``weight_by``), normalized so the
    mean weight of a training point is 1. The mean is over points, not weighted (Lin et al.'s and
    Cui et al.'s). gamma = 0 and no alpha is plain CE.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | str | None = None,
        ignore_index: int = IGNORE_INDEX,
        beta: float = 0.999,
        weight_by: str = "points",
        class_counts: ClassCounts | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        a = resolve_class_weight(alpha, beta, weight_by, class_counts, "focal.alpha")
        self.register_buffer("alpha", a, persistent=False)

    @staticmethod
    def needs_class_counts(kwargs: Mapping[str, Any]) -> bool:
        """Whether a config entry's arguments name a weight scheme (computed from class counts)."""
        return isinstance(kwargs.get("alpha"), str)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = valid_points("focal", logits, target, self.ignore_index)
        if labelled is None:
            return zero_loss(logits)
        logits, target = labelled
        log_p = F.log_softmax(at_least_float32(logits), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()).clamp(min=0.0) ** self.gamma) * log_p
        if self.alpha is not None:
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(
                    f"focal: alpha has {self.alpha.numel()} values for {logits.shape[1]} classes"
                )
            loss = loss * self.alpha.to(loss)[target]
        return loss.mean()
