"""Cross-entropy over labelled points (L_PR of the paper), ignore label −1, optionally class-weighted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.data.stats import ClassCounts

from ._common import IGNORE_INDEX, at_least_float32, check_logits_target, valid_points, zero_loss
from .class_balance import resolve_class_weight


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over the points whose label is not ``ignore_index``.

    ``class_weight`` re-weights classes as ``F.cross_entropy`` does (weighted mean): K values, or
    a scheme computed from the training split's class counts (``class_counts``, given by
    ``build_criteria``): ``inverse`` (1/n_k), ``inverse_sqrt`` (1/sqrt(n_k)) or
    ``effective_number`` (Cui et al., CVPR 2019: (1 − β)/(1 − β^{n_k}) with ``beta``), counting
    each class's points or scenes (``weight_by``); see ``pointseg.data.stats.class_weights``.
    A batch without any labelled point gives 0 with a graph instead of NaN.
    """

    def __init__(
        self,
        class_weight: Sequence[float] | str | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
        beta: float = 0.999,
        weight_by: str = "points",
        class_counts: ClassCounts | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        cw = resolve_class_weight(class_weight, beta, weight_by, class_counts, "cross_entropy.class_weight")
        self.register_buffer("class_weight", cw, persistent=False)

    @staticmethod
    def needs_class_counts(kwargs: Mapping[str, Any]) -> bool:
        """Whether a config entry's arguments name a weight scheme (computed from class counts)."""
        return isinstance(kwargs.get("class_weight"), str)

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
