"""Cross-entropy over labelled points (L_PR of the paper), ignore label −1."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import IGNORE_INDEX, at_least_float32, check_logits_target, valid_points, zero_loss


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over the points whose label is not ``ignore_index``.

    ``class_weight`` (K values) re-weights classes as ``F.cross_entropy`` does (weighted mean).
    A batch without any labelled point gives 0 with a graph instead of NaN.
    """

    def __init__(
        self,
        class_weight: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        cw = None if class_weight is None else torch.as_tensor(list(class_weight), dtype=torch.float32)
        self.register_buffer("class_weight", cw, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target("cross_entropy", logits, target)
        if self.class_weight is not None and self.class_weight.numel() != logits.shape[1]:
            raise ValueError(
                f"cross_entropy: class_weight has {self.class_weight.numel()} values "
                f"for {logits.shape[1]} classes"
            )
        logits, target = valid_points(logits, target, self.ignore_index)
        if target.numel() == 0:
            return zero_loss(logits)
        weight = None if self.class_weight is None else self.class_weight.to(logits)
        return F.cross_entropy(
            at_least_float32(logits), target, weight=weight, label_smoothing=self.label_smoothing
        )
