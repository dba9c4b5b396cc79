"""Minority collapse in the unconstrained-features model, and what CeCo's loss does to it.

The unconstrained-features model (Fang et al. 2021) makes every sample's last-layer feature h_i a
free parameter next to a learned linear classifier (W, b), trained with cross-entropy and weight
decay: the setting where *minority collapse* was shown. Under heavy imbalance the classifier
vectors of the minority classes move towards each other, far from the −1/(K−1) cosine of a simplex
ETF. Here the same model is trained with and without this project's ``CenterCollapseLoss`` on the
features, so the mechanism CeCo relies on can be checked in seconds, without a backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pointseg.analysis.collapse import CollapseAccumulator
from pointseg.losses.ceco import CenterCollapseLoss


@dataclass(frozen=True)
class UFMResult:
    minority_classifier_cos: float  # mean pairwise cosine of the minority classes' classifier rows
    majority_classifier_cos: float
    std_cos_means: float  # Std-cos of the centered class means (paper's equiangularity)
    maxangle_classifier: float
    center_loss: float  # L_CR of the final features (ln K = chance)


def unconstrained_features_run(
    center_weight: float,
    num_major: int = 5,
    num_minor: int = 5,
    n_major: int = 1000,
    imbalance: int = 1000,
    dim: int = 16,
    weight_decay: float = 0.03,
    bias: bool = True,
    steps: int = 800,
    lr: float = 1.0,
    seed: int = 0,
) -> UFMResult:
    """Train the model (full batch, SGD with momentum 0.9) and measure the collapse.

    Loss: mean CE + (wd/2)·mean‖h_i‖² + (wd/2)·‖W‖² [+ λ·L_CR(h, y)], the feature decay averaged
    over samples as in Fang et al., so every sample balances its own CE against its own decay.
    ``center_weight`` is λ; the center branch is ``CenterCollapseLoss`` with the features pooled
    as they are (no reduce, no projection: ``dim`` ≥ K−1), normalized, ETF × 5, no dropout, no
    prior.
    """
    k = num_major + num_minor
    n_minor = max(1, n_major // imbalance)
    counts = [n_major] * num_major + [n_minor] * num_minor
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    gen = torch.Generator().manual_seed(seed)
    h = (0.1 * torch.randn(len(y), dim, generator=gen)).requires_grad_(True)
    w = (0.1 * torch.randn(k, dim, generator=gen)).requires_grad_(True)
    b = torch.zeros(k, requires_grad=bias)
    params = [h, w] + ([b] if bias else [])
    center_loss = CenterCollapseLoss(dim, k, reduce_dim=0, projection="none", dropout=0.0)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(h @ w.T + b, y)
        loss = loss + weight_decay / 2 * (h.pow(2).sum(1).mean() + w.pow(2).sum())
        if center_weight:
            loss = loss + center_weight * center_loss(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h, w = h.detach(), w.detach()
    acc = CollapseAccumulator(k, dim)
    acc.process(h, y)
    metrics = acc.evaluate(w)["overall"]
    cos = F.normalize(w, dim=1) @ F.normalize(w, dim=1).T

    def mean_off_diagonal(block: torch.Tensor) -> float:
        return float(block[~torch.eye(block.shape[0], dtype=torch.bool)].mean())

    with torch.no_grad():
        lcr = float(center_loss(h, y))
    return UFMResult(
        minority_classifier_cos=mean_off_diagonal(cos[num_major:, num_major:]),
        majority_classifier_cos=mean_off_diagonal(cos[:num_major, :num_major]),
        std_cos_means=float(metrics["equiangular_means"]),
        maxangle_classifier=float(metrics["maxangle_classifier"]),
        center_loss=lcr,
    )


def etf_cosine(num_classes: int) -> float:
    return -1.0 / (num_classes - 1)


__all__ = ["UFMResult", "etf_cosine", "unconstrained_features_run"]
