"""The lowest L_CR a center branch can reach: a property of its frozen maps, not of training.

With free class centers (one trainable vector per class, in the space where the branch pools
them) optimized through the branch's own frozen maps and classifier, the cross-entropy of the
centers cannot go below this floor whatever the backbone learns. Chance is ln K. For unit vectors
classified by a simplex ETF × α directly the floor has a closed form,
``ln(1 + (K−1)·exp(−α·K/(K−1)))`` (0.84 for K = 200, α = 5); a branch whose centers pass through
fewer than K−1 dimensions, or through a ReLU, cannot reach it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pointseg.losses.ceco import CenterCollapseLoss


def etf_floor(num_classes: int, alpha: float) -> float:
    """L_CR when every normalized center sits on its own ETF column (the closed form above)."""
    k = num_classes
    return math.log1p((k - 1) * math.exp(-alpha * k / (k - 1)))


def chance_loss(branch: CenterCollapseLoss, classes: Sequence[int] | None = None) -> float:
    """L_CR of centers that carry no information (equal logits), averaged over ``classes``:
    ln K without a prior; with the log prior, each center's loss is −log p_k over the prior."""
    k = branch.num_classes
    labels = torch.arange(k) if classes is None else torch.as_tensor(list(classes))
    logits = torch.zeros(len(labels), k)
    if branch.log_prior is not None:
        logits = logits + branch.log_prior
    return float(F.cross_entropy(logits, labels))


def lowest_center_loss(
    branch: CenterCollapseLoss,
    classes: Sequence[int] | None = None,
    nonnegative: bool = False,
    use_prior: bool = False,
    steps: int = 1500,
    lr: float = 0.05,
    restarts: int = 2,
    seed: int = 0,
) -> float:
    """Lowest L_CR found by Adam over free centers (one per class of ``classes``, default all K).

    The centers live where the branch pools (``pooled_dim``), and where the branch has a reduce,
    only in what the reduce can produce from the backbone's features: the image of a free
    ``feature_dim`` vector under the frozen map, scaled per channel by a free positive BatchNorm
    scale (so a 128-d pooled space is a 96-d subspace for MinkUNet34C's features). The branch
    runs in eval mode (no dropout), with its log prior only if ``use_prior``. Trainable parts of the branch (a learned
    projection or center classifier) are optimized with the centers, on a copy. ``nonnegative``
    constrains the centers to ≥ 0, as the means of post-ReLU backbone features are when the
    branch pools those directly (no reduce). The best of ``restarts`` seeded starts is returned:
    an upper bound of the true floor, which Adam reaches to a few hundredths at these sizes.
    """
    labels = torch.arange(branch.num_classes) if classes is None else torch.as_tensor(list(classes))
    prior = branch.log_prior if use_prior and branch.log_prior is not None else 0.0
    branch = copy.deepcopy(branch).eval()
    start = copy.deepcopy(branch.state_dict())
    reduce = branch.reduce.weight if branch.reduce is not None else None
    free_dim = branch.pooled_dim if reduce is None else reduce.shape[1]

    def loss_of(free: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if reduce is not None:
            # Centers of standardized reduced features: W (x̄_k − x̄) / σ, i.e. the image of a
            # backbone-space vector under the frozen reduce, each channel scaled by the BatchNorm's
            # 1/σ (free and positive here: any batch statistics).
            centers = (free @ reduce.T) * F.softplus(scale)
        else:
            centers = F.softplus(free) if nonnegative else free
        return F.cross_entropy(branch.center_embedding(centers) @ branch.classifier_weight() + prior, labels)

    best = math.inf
    for r in range(restarts):
        branch.load_state_dict(start)
        gen = torch.Generator().manual_seed(seed + r)
        free = torch.randn(len(labels), free_dim, generator=gen).requires_grad_(True)
        scale = torch.zeros(branch.pooled_dim if reduce is not None else 0).requires_grad_(True)
        opt = torch.optim.Adam([free, scale, *branch.parameters()], lr=lr)
        for _ in range(steps):
            loss = loss_of(free, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            best = min(best, float(loss_of(free, scale)))
    return best


def presence_weighted_chance(
    branch: CenterCollapseLoss,
    classes_per_scene: Sequence[Sequence[int]],
    batch_size: int,
    samples: int = 20000,
    seed: int = 0,
) -> float:
    """Expected L_CR of uninformative centers as training averages it: over the centers *present*
    in a batch of ``batch_size`` distinct training scenes, so a class counts as often as it is in
    a batch (the head in every one, a rare class seldom). :func:`chance_loss` weighs all classes
    alike. Monte Carlo over ``samples`` batches drawn like the trainer's (without replacement)."""
    import numpy as np

    k = branch.num_classes
    logits = torch.zeros(1, k) + (branch.log_prior if branch.log_prior is not None else 0.0)
    per_class = (-torch.log_softmax(logits, dim=1)[0]).double().numpy()  # loss of a center of class c
    n = len(classes_per_scene)
    member = np.zeros((n, k), dtype=bool)
    for i, present in enumerate(classes_per_scene):
        member[i, list(present)] = True
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(samples):
        present = member[rng.choice(n, size=batch_size, replace=False)].any(0)
        total += per_class[present].mean()
    return float(total / samples)
