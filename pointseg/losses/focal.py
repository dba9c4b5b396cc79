"""Focal loss (Lin et al., ICCV 2017) over labelled points, ignore label −1."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import IGNORE_INDEX, at_least_float32, check_logits_target, valid_points, zero_loss


class FocalLoss(nn.Module):
    """Mean over labelled points of ``-alpha_y (1 - p_y)^gamma log p_y``.

    ``alpha`` is an optional per-class weight (K values); gamma = 0 and no alpha is plain CE.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        a = None if alpha is None else torch.as_tensor(list(alpha), dtype=torch.float32)
        self.register_buffer("alpha", a, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target("focal", logits, target)
        logits, target = valid_points(logits, target, self.ignore_index)
        if target.numel() == 0:
            return zero_loss(logits)
        log_p = F.log_softmax(at_least_float32(logits), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()).clamp(min=0.0) ** self.gamma) * log_p
        if self.alpha is not None:
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(
                    f"focal: alpha has {self.alpha.numel()} values for {logits.shape[1]} classes"
                )
            loss = loss * self.alpha.to(loss)[target]
        return loss.mean()
