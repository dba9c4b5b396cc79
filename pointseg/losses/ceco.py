"""CeCo, the Center Collapse Regularizer (Zhong et al., CVPR 2023, §4.2, Eq. 2-5).

A training-only auxiliary loss (``AUX_LOSSES["ceco"]``, built from the ``ceco`` section): the
features of the points of each class present in the batch are pooled into a class *center*, the
centers are classified by a classifier fixed to a simplex equiangular tight frame (ETF), and
L_CR, the cross-entropy of the centers against their own classes, is added to the point loss:
L = L_PR + λ·L_CR. At evaluation the branch is not built. The ETF itself is
``pointseg.losses.etf.simplex_etf``; the prior is ``pointseg.data.stats.class_prior`` of the
counts the build context reads.

The paper prints the branch as Eq. 3-4; the authors' released code (GPaCo/Seg,
``mmseg/models/decode_heads/uper_head_ceco.py``, ``UPerHead_ceco`` with the
``configs/ceco_ade20k`` settings) does more. ``ceco.head`` names the two:

``released`` (default)
    point features z_i (the point classifier's input) → frozen 1×1 reduce to 128 (no bias) →
    BatchNorm with batch statistics, affine frozen at (1, 0) → class centers (scatter mean over
    the batch) → frozen Linear(128→512) + ReLU → L2 normalize → Dropout(0.1) → fixed simplex ETF
    with unit-norm columns × α = 5 → + log class prior (p_k ∝ the number of training images, here
    scenes, that contain class k) → cross-entropy averaged over the centers present.
``paper_eq4``
    Eq. 3-4 as printed: centers of the features z_i themselves, classified by the ETF × α, no
    prior. A simplex ETF of K classes needs d ≥ K−1 dimensions and MinkUNet34C's features have
    96 < 199, so the centers pass the same frozen Linear + ReLU to 512 as the released head's
    (``projection``), then L2 normalization; no reduce / BatchNorm, no dropout.

Every step is also a key of its own (``reduce_dim``, ``projection``, ``proj_dim``, ``normalize``,
``dropout``, ``alpha``, ``classifier``, ``prior``); a key left ``None`` takes the head's value.
Frozen weights are buffers drawn from seeded generators: identical on every process, saved in
the checkpoint, and invisible to optimizers and weight decay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pointseg.data import stats
from pointseg.meta import IGNORE_INDEX
from pointseg.utils.comm import all_reduce_sum_with_grad, is_distributed
from pointseg.utils.schema import (
    in_range,
    non_negative,
    one_of,
    param,
    positive,
    section,
)

from .context import BuildContext
from .etf import random_orthonormal, simplex_etf

log = logging.getLogger(__name__)

# Choices of the ``ceco`` config section.
PROJECTIONS = ("frozen", "learned", "none")
CENTER_CLASSIFIERS = ("etf", "learned")
PRIORS = ("scenes", "points", "none")  # or a list of K counts / probabilities
# The released code adds log(p + 1e-12): a class with no training scene gets a logit of −27.6.
PRIOR_EPS = 1e-12


@dataclass(frozen=True)
class CenterHead:
    """One complete description of the center branch (what ``ceco.head`` names)."""

    reduce_dim: int  # frozen 1×1 reduce + BatchNorm (batch statistics) before pooling; 0 = none
    projection: str  # map of the centers to ``proj_dim``: frozen / learned Linear+ReLU, or none
    proj_dim: int
    normalize: bool  # L2-normalize the center embedding
    dropout: float  # on the normalized embedding, training only
    alpha: float  # norm of every ETF column (the released code's ``scale``)
    classifier: str  # fixed simplex ETF, or a learned linear center classifier (Table 1)
    prior: str | tuple[float, ...]  # log class prior added to the center logits


CENTER_HEADS: dict[str, CenterHead] = {
    "released": CenterHead(
        reduce_dim=128, projection="frozen", proj_dim=512, normalize=True, dropout=0.1, alpha=5.0,
        classifier="etf", prior="scenes",
    ),
    "paper_eq4": CenterHead(
        reduce_dim=0, projection="frozen", proj_dim=512, normalize=True, dropout=0.0, alpha=5.0,
        classifier="etf", prior="none",
    ),
}
DEFAULT_HEAD = "released"
HEAD_KEYS = tuple(f.name for f in dataclasses.fields(CenterHead))


def _prior(v: Any) -> str | None:
    if v is None or v in PRIORS or (isinstance(v, (list, tuple)) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)):
        return None
    return f"must be one of {list(PRIORS)} or a list of class counts"


@dataclass
class CecoConfig:
    """The ``ceco`` section. The head keys are null by default: the head named by ``head`` says."""

    enabled: bool = param(False, "[ours] off: the plain baseline; on: add λ·L_CR of the center branch to the point loss (training only)")
    head: str = param(DEFAULT_HEAD, "[released] released | paper_eq4 (Eq. 3-4 as printed); docs/ceco.md", one_of(*CENTER_HEADS))
    weight: float = param(0.4, "[paper] λ: 0.4 on ScanNet200 (ADE20K: 0.5 in the paper; the released configs use 0.8 for Swin-T, 0.2 for Swin-B)", non_negative)
    reduce_dim: Optional[int] = param(None, "[released] 128: frozen 1x1 reduce + BatchNorm (batch statistics) before pooling; 0: pool the features as they are", non_negative)
    projection: Optional[str] = param(None, "[released] frozen Linear+ReLU to proj_dim | learned | none (needs the pooled dim >= K-1)", one_of(*PROJECTIONS))
    proj_dim: Optional[int] = param(None, "[released] 512", positive)
    normalize: Optional[bool] = param(None, "[released] true: L2-normalize the center embedding")
    dropout: Optional[float] = param(None, "[released] 0.1 on the normalized embedding, training only; paper_eq4: 0", in_range(0.0, 1.0))
    alpha: Optional[float] = param(None, "[released] 5.0 (its `scale`): the norm of every ETF column", positive)
    classifier: Optional[str] = param(None, "[paper] etf (fixed) | learned (Table 1 control)", one_of(*CENTER_CLASSIFIERS))
    prior: Optional[Any] = param(None, "[released] scenes: + log p_k, p_k ∝ training scenes holding class k | points (∝ its points) | none | [K counts]", _prior)
    etf_seed: int = param(0, "[ours] seeds U of W* and the frozen maps: the same on every process and resume")
    global_centers: bool = param(False, "[released] false: per-process centers; true: all-reduce the class sums")


def pool_rows(segment: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Row of each point in a (K + 1)-row table of class sums: its class, or K when ignored.

    Ignored points go to an extra row K that is dropped: no boolean-mask copy of the (N, D)
    features, whose gather and scatter-back cost more than the pooling itself.
    """
    segment = segment.long()
    rows = torch.where(segment == ignore_index, num_classes, segment)
    bad = (rows < 0) | (rows > num_classes) | ((segment == num_classes) & (ignore_index != num_classes))
    if bool(bad.any()):
        wrong = segment[bad]
        raise ValueError(
            f"center_pool: labels must be in 0..{num_classes - 1} or {ignore_index} (ignore); got "
            f"{wrong.numel()} outside, e.g. {int(wrong[0])}"
        )
    return rows


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
    rows = pool_rows(segment, num_classes, ignore_index)
    sums = feat.new_zeros(num_classes + 1, feat.shape[1]).index_add_(0, rows, feat)[:num_classes]
    counts = torch.bincount(rows, minlength=num_classes + 1)[:num_classes].to(feat.dtype)
    if global_centers and is_distributed(group):
        sums = all_reduce_sum_with_grad(sums, group)
        counts = counts.clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    labels = torch.nonzero(counts > 0).squeeze(1)
    counts = counts[labels]
    return sums[labels] / counts[:, None], labels, counts


def _frozen_linear_init(out_dim: int, in_dim: int, seed: int, bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """nn.Linear's / nn.Conv's default init range U(±1/sqrt(in)), from our own seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(in_dim)
    weight = (torch.rand(out_dim, in_dim, generator=gen) * 2 - 1) * bound
    b = (torch.rand(out_dim, generator=gen) * 2 - 1) * bound if bias else None
    return weight, b


class CenterReduce(nn.Module):
    """Frozen 1×1 reduce (no bias) + BatchNorm with batch statistics and frozen affine (1, 0).

    The released head applies this to every point feature before pooling, so the centers are
    means of standardized, signed features rather than of the backbone's post-ReLU (all ≥ 0)
    ones. In training mode the BatchNorm normalizes with the statistics of the current batch (all
    points, labelled or not, as the released head does). Its running statistics are updated and
    saved like any BatchNorm's but never used: evaluation drops the branch, and the collapse
    analysis re-estimates the statistics over the whole split.
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int) -> None:
        super().__init__()
        weight, _ = _frozen_linear_init(out_dim, in_dim, seed, bias=False)
        self.register_buffer("weight", weight)
        self.norm = nn.BatchNorm1d(out_dim, affine=False)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.linear(x, self.weight.to(x.dtype)))

    def pooled(
        self, x: torch.Tensor, segment: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``center_pool(self(x), ...)`` in training mode, without standardizing every point.

        Reduce and BatchNorm are affine per point, so the center of class k is
        ``W (x̄_k − x̄) / sqrt(v + eps)`` with x̄ the mean of all N points and
        ``v_j = w_jᵀ C w_j`` their biased variance along row j of W (C: covariance of x). That
        needs the (D, D) covariance and the (K, D) class means instead of the (N, 128) map, its
        BatchNorm and their backward: the branch then costs a few passes over the (N, D) features
        (``bench/bench_ceco.py``). The running statistics are updated as BatchNorm would.
        """
        norm = self.norm
        n = x.shape[0]
        w = self.weight.to(x.dtype)
        rows = pool_rows(segment, num_classes, ignore_index)
        mean, cov, sums = _CenterMoments.apply(x, rows, num_classes + 1)
        counts = torch.bincount(rows, minlength=num_classes + 1)[:num_classes].to(x.dtype)
        labels = torch.nonzero(counts > 0).squeeze(1)
        counts = counts[labels]
        class_means = sums[labels] / counts[:, None]
        var = ((w @ cov) * w).sum(1)
        centers = (class_means - mean) @ w.T / torch.sqrt(var + norm.eps)
        if norm.track_running_stats and norm.running_mean is not None:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                m = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
                unbiased = var * (n / max(n - 1, 1))
                norm.running_mean.mul_(1 - m).add_(mean @ w.T, alpha=m)
                norm.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return centers, labels, counts

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, frozen"


class _CenterMoments(torch.autograd.Function):
    """Mean (D,), biased covariance (D, D) and per-row sums (R, D) of x (N, D), in passes over x
    in row chunks: no (N, D) temporary but the gradient itself.

    Autograd through ``x - mean``, ``xcᵀxc`` and ``index_add_`` would allocate several (N, D)
    tensors forward and backward, and on CPU the page faults of fresh buffers cost as much as
    the arithmetic. The backward uses that the covariance's gradient through the mean vanishes
    (the centered rows sum to zero): ∂L/∂x_i = (x_i − x̄)(G + Gᵀ)/N + ∂L/∂sums[row_i] + ∂L/∂x̄ / N.
    """

    CHUNK = 1 << 14

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, ...]:
        n, d = x.shape
        mean = x.mean(0)
        cov = x.new_zeros(d, d)
        buf = x.new_empty(min(n, _CenterMoments.CHUNK), d)
        for s in range(0, n, _CenterMoments.CHUNK):
            chunk = x[s : s + _CenterMoments.CHUNK]
            xc = torch.sub(chunk, mean, out=buf[: chunk.shape[0]])
            cov.addmm_(xc.T, xc)
        cov /= max(n, 1)
        sums = x.new_zeros(num_rows, d).index_add_(0, rows, x)
        ctx.save_for_backward(x, rows, mean)
        return mean, cov, sums

    @staticmethod
    def backward(ctx: Any, g_mean: torch.Tensor, g_cov: torch.Tensor, g_sums: torch.Tensor) -> tuple:
        x, rows, mean = ctx.saved_tensors
        n = x.shape[0]
        sym = (g_cov + g_cov.T) / max(n, 1)
        grad = torch.empty_like(x)
        buf = x.new_empty(min(n, _CenterMoments.CHUNK), x.shape[1])
        per_point_mean = g_mean / max(n, 1)
        for s in range(0, n, _CenterMoments.CHUNK):
            chunk = x[s : s + _CenterMoments.CHUNK]
            out = grad[s : s + _CenterMoments.CHUNK]
            xc = torch.sub(chunk, mean, out=buf[: chunk.shape[0]])
            torch.mm(xc, sym, out=out)
            out += g_sums.index_select(0, rows[s : s + _CenterMoments.CHUNK])
            out += per_point_mean
        return grad, None, None


class CenterProjection(nn.Module):
    """Linear + ReLU map of centers to ``out_dim`` ("frozen" or "learned"), or the identity ("none")."""

    def __init__(self, in_dim: int, out_dim: int, mode: str = "frozen", seed: int = 0) -> None:
        super().__init__()
        if mode not in PROJECTIONS:
            raise ValueError(f"ceco.projection: unknown {mode!r}; expected one of {PROJECTIONS}")
        self.mode = mode
        self.in_dim = int(in_dim)
        self.out_dim = int(in_dim) if mode == "none" else int(out_dim)
        if mode == "none":
            return
        weight, bias = _frozen_linear_init(self.out_dim, self.in_dim, seed, bias=True)
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


def log_class_prior(counts: Sequence[float] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """log(p_k + 1e-12) with p = counts / Σ counts, as the released code's ``torch.log(weight + 1e-12)``.

    ``counts`` may be counts or probabilities (only their ratios matter).
    """
    prior = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if prior.numel() != num_classes or not bool(torch.isfinite(prior).all()) or bool((prior < 0).any()):
        raise ValueError(
            f"ceco.prior: need {num_classes} finite, non-negative class counts, got {prior.numel()} values"
        )
    if float(prior.sum()) <= 0:
        raise ValueError("ceco.prior: the class counts are all zero")
    # The one normalization of the codebase (absent classes kept at p = 0, as released).
    return torch.log(torch.as_tensor(stats.class_prior(prior.numpy(), absent="zero")) + PRIOR_EPS).float()


class CenterCollapseLoss(nn.Module):
    """L_CR (Eq. 4-5): cross-entropy of the classified class centers against their class indices.

    ``forward(feat, segment)`` returns the unweighted L_CR; ``weight`` (λ) is kept here for the
    segmentor, which forms L_PR + λ·L_CR. The stages are exposed for the analysis:
    :meth:`point_embedding` (reduce + BN), :meth:`center_embedding` (projection + normalization:
    the space CeCo regularizes) and :meth:`center_logits`.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        *,
        weight: float = 0.4,
        reduce_dim: int = CENTER_HEADS[DEFAULT_HEAD].reduce_dim,
        projection: str = CENTER_HEADS[DEFAULT_HEAD].projection,
        proj_dim: int = CENTER_HEADS[DEFAULT_HEAD].proj_dim,
        normalize: bool = CENTER_HEADS[DEFAULT_HEAD].normalize,
        dropout: float = CENTER_HEADS[DEFAULT_HEAD].dropout,
        alpha: float = CENTER_HEADS[DEFAULT_HEAD].alpha,
        classifier: str = CENTER_HEADS[DEFAULT_HEAD].classifier,
        class_prior: Sequence[float] | torch.Tensor | None = None,
        etf_seed: int = 0,
        global_centers: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if classifier not in CENTER_CLASSIFIERS:
            raise ValueError(f"ceco.classifier: unknown {classifier!r}; expected one of {CENTER_CLASSIFIERS}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"ceco.dropout must be in [0, 1), got {dropout}")
        if int(reduce_dim) < 0:
            raise ValueError(f"ceco.reduce_dim must be >= 0 (0: no reduce), got {reduce_dim}")
        self.num_classes = int(num_classes)
        self.weight = float(weight)
        self.normalize = bool(normalize)
        self.global_centers = bool(global_centers)
        self.ignore_index = ignore_index
        self.classifier_kind = classifier
        self.reduce = CenterReduce(feature_dim, reduce_dim, seed=int(etf_seed) + 2) if reduce_dim else None
        pooled_dim = int(reduce_dim) or int(feature_dim)
        self.projection = CenterProjection(pooled_dim, proj_dim, projection, seed=int(etf_seed) + 1)
        d = self.projection.out_dim
        if classifier == "etf" and d < num_classes - 1:
            where = "the pooled feature dim" if projection == "none" else "ceco.proj_dim"
            raise ValueError(
                f"a simplex ETF of {num_classes} classes needs {where} >= {num_classes - 1}, got {d}"
                + ("; use ceco.projection frozen or learned" if projection == "none" else "")
            )
        self.dropout = nn.Dropout(float(dropout)) if dropout else nn.Identity()
        if classifier == "etf":
            self.register_buffer("etf", simplex_etf(num_classes, d, alpha=alpha, seed=etf_seed))
            self.classifier = None
        else:
            self.etf = None
            self.classifier = nn.Linear(d, num_classes)
        if class_prior is not None:
            self.register_buffer("log_prior", log_class_prior(class_prior, self.num_classes))
        else:
            self.log_prior = None

    @property
    def pooled_dim(self) -> int:
        """Dimension of the features that are pooled into centers."""
        return self.projection.in_dim

    def point_embedding(self, feat: torch.Tensor) -> torch.Tensor:
        """Per-point features as they are pooled: after the reduce + BatchNorm, if there is one."""
        return feat if self.reduce is None else self.reduce(feat)

    def center_embedding(self, centers: torch.Tensor) -> torch.Tensor:
        """Centers (C, pooled_dim) → the space the classifier sees (C, d): projection, L2 norm."""
        h = self.projection(centers)
        return F.normalize(h, dim=1) if self.normalize else h

    def classifier_weight(self) -> torch.Tensor:
        """The center classifier's (d, K) matrix: W* or the learned weight, transposed."""
        return self.etf if self.classifier is None else self.classifier.weight.T

    def center_logits(self, centers: torch.Tensor) -> torch.Tensor:
        """Logits (C, K) of centers: embedding → dropout → classifier (+ log prior)."""
        h = self.dropout(self.center_embedding(centers))
        logits = h @ self.etf.to(h.dtype) if self.classifier is None else self.classifier(h)
        if self.log_prior is not None:
            logits = logits + self.log_prior.to(h.dtype)
        return logits

    def forward(self, feat: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        # At least float32 (also under autocast): sums over 10^5 points lose precision in half.
        with torch.autocast(device_type=feat.device.type, enabled=False):
            if feat.dtype not in (torch.float32, torch.float64):
                feat = feat.float()
            if self.reduce is not None and self.reduce.norm.training and not self.global_centers:
                centers, labels, _ = self.reduce.pooled(feat, segment, self.num_classes, self.ignore_index)
            else:  # per-process BatchNorm statistics with global centers: standardize, then pool
                centers, labels, _ = center_pool(
                    self.point_embedding(feat), segment, self.num_classes, self.ignore_index, self.global_centers
                )
            if labels.numel() == 0:
                return feat.sum() * 0.0
            return F.cross_entropy(self.center_logits(centers), labels)

    def aux_terms(self, feat: torch.Tensor, logits: torch.Tensor, segment: torch.Tensor) -> dict[str, torch.Tensor]:
        """The auxiliary-loss protocol of the segmentor: ``{"loss_ceco": L_CR}``, unweighted."""
        return {"loss_ceco": self(feat, segment)}

    @classmethod
    def from_section(cls, cfg: Any, ctx: BuildContext) -> "CenterCollapseLoss":
        """Build from a typed ``ceco`` section (``enabled`` is the caller's business) and the run's
        facts: the feature width, the number of classes and, for a prior, the class counts."""
        head = resolve_head(cfg)
        prior = class_prior(head.prior, ctx)
        fields = dataclasses.asdict(head)
        fields.pop("prior")
        return cls(
            ctx.require_feature_dim("ceco"), ctx.num_classes, class_prior=prior, weight=float(cfg.weight),
            etf_seed=int(cfg.etf_seed), global_centers=bool(cfg.global_centers), **fields,
        )

    @classmethod
    def from_config(
        cls,
        ceco_cfg: Mapping[str, Any] | Any,
        feature_dim: int,
        num_classes: int,
        data_root: str | Path | None = None,
    ) -> "CenterCollapseLoss":
        """:meth:`from_section` of a ``ceco`` section, complete or partial (for the analysis and
        tools that build the branch alone)."""
        ctx = BuildContext(int(num_classes), int(feature_dim), Path(data_root) if data_root is not None else None)
        return cls.from_section(ceco_section(ceco_cfg), ctx)


def ceco_section(ceco_cfg: Mapping[str, Any] | Any) -> Any:
    """A typed, checked ``ceco`` section from a complete or partial one (a loaded config's as it is)."""
    return section(CecoConfig, ceco_cfg, "ceco")


def resolve_head(cfg: Any) -> CenterHead:
    """The head ``ceco.head`` names, with every key the section sets (not null) replacing its value;
    ``cfg`` is a section as :func:`ceco_section` returns it (typed and checked)."""
    changes = {k: cfg[k] for k in HEAD_KEYS if cfg[k] is not None}
    if "prior" in changes and not isinstance(changes["prior"], str):
        changes["prior"] = tuple(float(v) for v in changes["prior"])
    return dataclasses.replace(CENTER_HEADS[cfg.head], **changes)


def class_prior(prior: str | Sequence[float], ctx: BuildContext) -> Sequence[float] | None:
    """Class counts behind the log prior: scene counts (the released code's image counts), point
    counts, a given list, or ``None`` for no prior."""
    if not isinstance(prior, str):
        return list(prior)
    if prior == "none":
        return None
    if ctx.data_root is None and ctx.counts is None:
        raise ValueError(f"ceco.prior={prior} needs data.root (the training scenes' class counts) or a list of counts")
    counts = ctx.class_counts(f"ceco.prior={prior} (or none, or a list of counts)")
    log.info("CeCo log prior from training %s counts (%s)", prior, counts.source)
    return stats.per_class_counts(counts, prior).tolist()


__all__ = [
    "CENTER_CLASSIFIERS",
    "CENTER_HEADS",
    "CecoConfig",
    "PRIORS",
    "PROJECTIONS",
    "CenterCollapseLoss",
    "CenterHead",
    "CenterProjection",
    "CenterReduce",
    "center_pool",
    "class_prior",
    "log_class_prior",
    "random_orthonormal",
    "resolve_head",
    "simplex_etf",
]
