"""Logit-adjusted cross-entropy (Menon et al., ICLR 2021) and balanced softmax (Ren et al., NeurIPS
2020) over labelled points, ignore label −1.

Both add the log class prior of the training labels to the logits inside the softmax, so the
loss is Fisher-consistent for the *balanced* error: rare classes need a smaller margin to win at
training, and the plain logits, used at test time, no longer carry the prior. Balanced softmax is
the same loss with τ = 1 (Ren et al.'s Eq. 4 for a softmax over K classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.data.stats import ClassCounts

from .class_balance import resolve_log_prior
from .point import IGNORE_INDEX, at_least_float32, valid_points, zero_loss


class LogitAdjustedLoss(nn.Module):
    """Mean over labelled points of ``−log softmax(f + τ·log p)_y``.

    ``prior``: ``points`` (p_k ∝ the training points of class k: a point is a sample of the
    point classifier), ``scenes`` (∝ training scenes holding k), or K counts / probabilities;
    the training counts come from ``class_counts`` (``build_criteria`` passes them). A class
    with no training count is counted as the rarest present one (``pointseg.data.stats.class_prior``).
    τ = 0 is plain cross-entropy.
    """

    name = "logit_adjusted"

    def __init__(
        self,
        tau: float = 1.0,
        prior: str | Sequence[float] = "points",
        ignore_index: int = IGNORE_INDEX,
        class_counts: ClassCounts | None = None,
    ) -> None:
        super().__init__()
        if not tau >= 0:
            raise ValueError(f"{self.name}: tau must be >= 0, got {tau}")
        self.tau = float(tau)
        self.ignore_index = ignore_index
        self.register_buffer("log_prior", resolve_log_prior(prior, class_counts, f"{self.name}.prior"), persistent=False)

    @staticmethod
    def needs_class_counts(kwargs: Mapping[str, Any]) -> bool:
        """Whether a config entry's prior is the training split's (computed from class counts)."""
        return isinstance(kwargs.get("prior", "points"), str)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = valid_points(self.name, logits, target, self.ignore_index)
        if self.log_prior.numel() != logits.shape[1]:
            raise ValueError(f"{self.name}: the prior has {self.log_prior.numel()} classes, the logits {logits.shape[1]}")
        if labelled is None:
            return zero_loss(logits)
        logits, target = labelled
        logits = at_least_float32(logits)
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), target)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al., NeurIPS 2020): the logit-adjusted loss with τ = 1."""

    name = "balanced_softmax"

    def __init__(
        self,
        prior: str | Sequence[float] = "points",
        ignore_index: int = IGNORE_INDEX,
        class_counts: ClassCounts | None = None,
    ) -> None:
        super().__init__(1.0, prior, ignore_index, class_counts)


__all__ = ["BalancedSoftmaxLoss", "LogitAdjustedLoss"]
