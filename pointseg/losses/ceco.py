"""CeCo, the Center Collapse Regularizer (Zhong et al., CVPR 2023, §4.2, Eq. 1-5).

Training-only branch: the mean feature of each class present in the batch (its *center*) is
projected, optionally L2-normalized, and classified by a classifier fixed to a simplex
equiangular tight frame (ETF). L_CR is the cross-entropy of the center logits against the center
labels, averaged over the centers present; the segmentor adds λ·L_CR to the point loss L_PR.

Why a projection: a simplex ETF of K vectors needs d ≥ K−1 dimensions, and the backbone feature
(96-d for MinkUNet34C) is smaller than K−1 = 199. As in the authors' released code, centers go
through a frozen random linear layer + ReLU to 512-d by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1
# Choices of the ``ceco`` config section.
PROJECTIONS = ("frozen", "learned", "none")
CENTER_CLASSIFIERS = ("etf", "learned")


def random_orthonormal(dim: int, num: int, seed: int = 0) -> torch.Tensor:
    """U (dim, num) float64 with orthonormal columns: Q of the QR of a seeded Gaussian.

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, so every process and
    every device gets the same matrix for the same seed.
    """
    if num > dim:
        raise ValueError(f"random_orthonormal: cannot have {num} orthonormal columns in {dim} dimensions")
    gen = torch.Generator().manual_seed(int(seed))
    u, r = torch.linalg.qr(torch.randn(dim, num, generator=gen, dtype=torch.float64))
    # Sign fix so U does not depend on the LAPACK build's sign convention.
    return u * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()).double())


def simplex_etf(
    num_classes: int, dim: int, alpha: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The fixed classifier W* (dim, K) of Eq. 2: ``α·sqrt(K/(K−1))·U(I_K − 1 1ᵀ/K)``.

    U = ``random_orthonormal(dim, K, seed)``. Columns w_k have norm α and pairwise cosine
    −1/(K−1). The ETF spans only K−1 dimensions; for ``dim == K−1`` (too small for a U with K
    columns) the same frame is built in an orthonormal basis B (K, K−1) of the subspace orthogonal
    to the all-ones vector, rotated by a seeded U (K−1, K−1): W* = α·sqrt(K/(K−1))·U Bᵀ.
    """
    k, d = int(num_classes), int(dim)
    if k < 2:
        raise ValueError(f"simplex_etf: need at least 2 classes, got {k}")
    if d < k - 1:
        raise ValueError(f"simplex_etf: a simplex ETF of {k} classes needs dim >= {k - 1}, got {d}")
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if d >= k:
        frame = random_orthonormal(d, k, seed) @ centering
    else:
        basis, _ = torch.linalg.qr(centering[:, : k - 1])
        frame = random_orthonormal(d, d, seed) @ basis.T
    return (alpha * math.sqrt(k / (k - 1)) * frame).to(dtype)


def center_pool(
    feat: torch.Tensor,
    segment: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    global_centers: bool = False,
    group: dist.ProcessGroup | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class centers z̄_k (Eq. 3) of the classes present: (centers (C, D), labels (C,), counts (C,)).

    Per-class sums and counts come from one ``index_add_`` / ``bincount`` (no loop over classes).
    With ``global_centers`` under torch.distributed, sums and counts are all-reduced so every
    process sees the centers of the global batch. The sum goes through the differentiable
    all-reduce, whose backward sums the gradients of all processes: each process then holds
    world_size × its share of the global-batch gradient, which DDP's gradient averaging turns
    into exactly the gradient of one process on the whole batch.
    """
    if feat.dim() != 2 or segment.dim() != 1 or segment.shape[0] != feat.shape[0]:
        raise ValueError(
            f"center_pool: expected feat (N, D) and segment (N,), got {tuple(feat.shape)} "
            f"and {tuple(segment.shape)}"
        )
    # Ignored points go to an extra row K that is dropped: no boolean-mask copy of the (N, D)
    # features, whose gather and scatter-back cost more than the pooling itself.
    segment = segment.long()
    rows = torch.where(segment == ignore_index, num_classes, segment)
    bad = (rows < 0) | (rows > num_classes) | ((segment == num_classes) & (ignore_index != num_classes))
    if bool(bad.any()):
        wrong = segment[bad]
        raise ValueError(
            f"center_pool: labels must be in 0..{num_classes - 1} or {ignore_index} (ignore); got "
            f"{wrong.numel()} outside, e.g. {int(wrong[0])}"
        )
    sums = feat.new_zeros(num_classes + 1, feat.shape[1]).index_add_(0, rows, feat)[:num_classes]
    counts = torch.bincount(rows, minlength=num_classes + 1)[:num_classes].to(feat.dtype)
    if global_centers and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        import torch.distributed.nn.functional as dist_nn

        sums = dist_nn.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        counts = counts.clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    labels = torch.nonzero(counts > 0).squeeze(1)
    counts = counts[labels]
    return sums[labels] / counts[:, None], labels, counts


class CenterProjection(nn.Module):
    """Linear + ReLU map of centers to ``out_dim`` ("frozen" or "learned"), or the identity ("none").

    The frozen weights are buffers drawn from a seeded generator: identical on every process,
    saved in the checkpoint, and invisible to optimizers (so weight decay cannot touch them).
    """

    def __init__(self, in_dim: int, out_dim: int, mode: str = "frozen", seed: int = 0) -> None:
        super().__init__()
        if mode not in PROJECTIONS:
            raise ValueError(f"ceco.projection: unknown {mode!r}; expected one of {PROJECTIONS}")
        self.mode = mode
        self.in_dim = int(in_dim)
        self.out_dim = int(in_dim) if mode == "none" else int(out_dim)
        if mode == "none":
            return
        # nn.Linear's default init range, drawn from our own generator.
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(self.in_dim)
        weight = (torch.rand(self.out_dim, self.in_dim, generator=gen) * 2 - 1) * bound
        bias = (torch.rand(self.out_dim, generator=gen) * 2 - 1) * bound
        if mode == "frozen":
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)
        else:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        return F.relu(F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype)))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, in_dim={self.in_dim}, out_dim={self.out_dim}"


def class_prior_from_stats(path: str | Path, split: str = "train") -> list[float]:
    """Per-class point counts of ``split`` from a preprocessing ``stats.json``
    (``splits.<split>.class_point_counts``, see ``pointseg.preprocessing``)."""
    path = Path(path)
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read class statistics ({e})") from e
    try:
        counts = stats["splits"][split]["class_point_counts"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: no 'splits.{split}.class_point_counts' entry for the class prior") from e
    return [float(c) for c in counts]


class CenterCollapseLoss(nn.Module):
    """L_CR (Eq. 4-5): cross-entropy of classified class centers against their class indices.

    ``forward(feat, segment)`` returns the unweighted L_CR; ``weight`` (λ) is kept here for the
    segmentor, which forms L_PR + λ·L_CR. ``etf`` is the fixed classifier W* (proj_dim, K), a
    buffer (saved, never trained) when ``classifier="etf"``; ``classifier="learned"`` uses a
    trainable linear center classifier instead (paper Table 1).
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        weight: float = 0.4,
        projection: str = "frozen",
        proj_dim: int = 512,
        normalize: bool = True,
        alpha: float = 5.0,
        classifier: str = "etf",
        etf_seed: int = 0,
        class_prior: Sequence[float] | None = None,
        global_centers: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if classifier not in CENTER_CLASSIFIERS:
            raise ValueError(f"ceco.classifier: unknown {classifier!r}; expected one of {CENTER_CLASSIFIERS}")
        if projection == "none" and classifier == "etf" and feature_dim < num_classes - 1:
            raise ValueError(
                f"ceco.projection=none needs feature_dim >= num_classes - 1 for a simplex ETF "
                f"({feature_dim} < {num_classes - 1}); use projection frozen or learned"
            )
        if projection != "none" and classifier == "etf" and proj_dim < num_classes - 1:
            raise ValueError(f"ceco.proj_dim must be >= num_classes - 1 = {num_classes - 1}, got {proj_dim}")
        self.num_classes = int(num_classes)
        self.weight = float(weight)
        self.normalize = bool(normalize)
        self.global_centers = bool(global_centers)
        self.ignore_index = ignore_index
        self.classifier_kind = classifier
        self.projection = CenterProjection(feature_dim, proj_dim, projection, seed=int(etf_seed) + 1)
        d = self.projection.out_dim
        if classifier == "etf":
            self.register_buffer("etf", simplex_etf(num_classes, d, alpha=alpha, seed=etf_seed))
            self.classifier = None
        else:
            self.etf = None
            self.classifier = nn.Linear(d, num_classes)
        if class_prior is not None:
            prior = torch.as_tensor(list(class_prior), dtype=torch.float64)
            if prior.numel() != num_classes or bool((prior < 0).any()):
                raise ValueError(f"ceco.logit_adjust: need {num_classes} non-negative class counts, got {prior.numel()}")
            # No log 0 = −inf: given counts, an unseen class counts as one point; given
            # probabilities (all <= 1), it gets 1e-12.
            prior = prior.clamp(min=1.0 if prior.max() > 1 else 1e-12)
            self.register_buffer("log_prior", torch.log(prior / prior.sum()).float())
        else:
            self.log_prior = None

    def center_logits(self, centers: torch.Tensor) -> torch.Tensor:
        """Logits (C, K) of centers (C, D): projection → optional L2 norm → classifier (+ log prior)."""
        h = self.projection(centers)
        if self.normalize:
            h = F.normalize(h, dim=1)
        logits = h @ self.etf.to(h.dtype) if self.classifier is None else self.classifier(h)
        if self.log_prior is not None:
            logits = logits + self.log_prior.to(h.dtype)
        return logits

    def forward(self, feat: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        # At least float32 (also under autocast): sums over 10^5 points lose precision in half.
        if feat.dtype not in (torch.float32, torch.float64):
            feat = feat.float()
        centers, labels, _ = center_pool(
            feat, segment, self.num_classes, self.ignore_index, self.global_centers
        )
        if labels.numel() == 0:
            return feat.sum() * 0.0
        with torch.autocast(device_type=feat.device.type, enabled=False):
            return F.cross_entropy(self.center_logits(centers), labels)

    @classmethod
    def from_config(
        cls, ceco_cfg: dict, feature_dim: int, num_classes: int, data_root: str | Path | None = None
    ) -> "CenterCollapseLoss":
        """Build from a plain ``ceco`` config dict (``enabled`` is the caller's business).

        ``logit_adjust``: false (default), true (prior from ``<data_root>/stats.json`` train
        class point counts) or a list of K class counts / probabilities.
        """
        cfg = dict(ceco_cfg)
        cfg.pop("enabled", None)
        adjust = cfg.pop("logit_adjust", False)
        prior = None
        if isinstance(adjust, (list, tuple, np.ndarray)):
            prior = list(adjust)
        elif adjust:
            if data_root is None:
                raise ValueError("ceco.logit_adjust=true needs data.root (for stats.json) or a list of class counts")
            prior = class_prior_from_stats(Path(data_root) / "stats.json")
        known = {
            "weight", "projection", "proj_dim", "normalize", "alpha", "classifier", "etf_seed",
            "global_centers", "ignore_index",
        }
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"ceco: unknown keys {unknown}; known: {sorted(known | {'enabled', 'logit_adjust'})}")
        return cls(feature_dim, num_classes, class_prior=prior, **cfg)
