"""Cross-entropy over labelled points (L_PR of the paper), ignore label −1, optionally class-weighted
and, in training, over a class-balanced subset of the points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.data.stats import ClassCounts

from .class_balance import resolve_class_weight
from .point import IGNORE_INDEX, at_least_float32, valid_points, zero_loss

# The keys of ``balanced_sampling``.
BALANCED_SAMPLING_KEYS = ("points_per_class",)


def balanced_point_subset(target: torch.Tensor, points_per_class: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (int64, ascending) of a uniformly random subset of ``target`` (labels ≥ 0) with
    min(n_c, ``points_per_class``) points of every class c present.

    One random key per point, sorted by key and then (stably) by class: each class's points come
    in a uniformly random order, and the first ``points_per_class`` of each are kept. Vectorized,
    so it costs two sorts on the logits' device, never a loop over classes.
    """
    keys = torch.rand(target.shape, generator=generator, device=target.device, dtype=torch.float64)
    order = torch.argsort(keys)
    order = order[torch.argsort(target[order], stable=True)]
    cls = target[order]
    counts = torch.bincount(cls)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(cls.numel(), device=target.device) - starts[cls]
    return torch.sort(order[rank < points_per_class]).values


def _points_per_class(spec: Mapping[str, Any] | None) -> int | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) - set(BALANCED_SAMPLING_KEYS) or "points_per_class" not in spec:
        raise ValueError(f"cross_entropy.balanced_sampling must be {{points_per_class: N}}, got {spec!r}")
    n = spec["points_per_class"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cross_entropy.balanced_sampling.points_per_class must be an integer >= 1, got {n!r}")
    return n


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over the points whose label is not ``ignore_index``.

    ``class_weight`` re-weights classes as ``F.cross_entropy`` does (weighted mean): K values, or
    a scheme computed from the training split's class counts (``class_counts``, given by
    ``build_criteria``): ``inverse`` (1/n_k), ``inverse_sqrt`` (1/sqrt(n_k)) or
    ``effective_number`` (Cui et al., CVPR 2019: (1 − β)/(1 − β^{n_k}) with ``beta``), counting
    each class's points or scenes (``weight_by``); see ``pointseg.data.stats.class_weights``.
    A batch without any labelled point gives 0 with a graph instead of NaN.

    ``balanced_sampling: {points_per_class: N}`` (per-category balanced point sampling of the
    language-grounded ScanNet200 baseline [LG], ``balanced_category_sampling``): in training, the
    loss is the (weighted) mean over a random subset of the batch's labelled points holding at
    most N points of every class present, so the head's many points stop dominating the
    gradient; in evaluation it is the plain loss over all points. The subset is drawn by a torch
    generator on the logits' device seeded with one draw from torch's global CPU generator,
    which the trainer's checkpoints save and restore, so a resumed run draws the same subsets.

    Where it differs from [LG] (``lib/losses/utils.py``, ``sample_categories_for_balancing``):
    [LG] splits the classes into frequency thirds and keeps a share (``balanced_sample_head_ratio``
    / ``_common_ratio``) of each head / common class's points and every tail point; its defaults
    (−1) keep every point, so "on by default" only changes the mean's denominator there. Its mean
    also counts the dropped (and ignored) points in the denominator (``(loss * mask).mean()``);
    here the mean is over the chosen points, so the loss keeps CE's scale. [LG] draws with
    NumPy's global generator and also subsamples the validation loss; here only training does.
    A per-class cap needs no frequency split and bounds every class alike.
    """

    def __init__(
        self,
        class_weight: Sequence[float] | str | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
        beta: float = 0.999,
        weight_by: str = "points",
        class_counts: ClassCounts | None = None,
        balanced_sampling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        cw = resolve_class_weight(class_weight, beta, weight_by, class_counts, "cross_entropy.class_weight")
        self.register_buffer("class_weight", cw, persistent=False)
        self.points_per_class = _points_per_class(balanced_sampling)

    @staticmethod
    def needs_class_counts(kwargs: Mapping[str, Any]) -> bool:
        """Whether a config entry's arguments name a weight scheme (computed from class counts)."""
        return isinstance(kwargs.get("class_weight"), str)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = valid_points("cross_entropy", logits, target, self.ignore_index)
        if self.class_weight is not None and self.class_weight.numel() != logits.shape[1]:
            raise ValueError(
                f"cross_entropy: class_weight has {self.class_weight.numel()} values "
                f"for {logits.shape[1]} classes"
            )
        if labelled is None:
            return zero_loss(logits)
        logits, target = labelled
        if self.points_per_class is not None and self.training:
            seed = int(torch.randint(0, 2**62, (1,)))  # torch's global CPU generator: restored on resume
            generator = torch.Generator(device=target.device).manual_seed(seed)
            keep = balanced_point_subset(target, self.points_per_class, generator)
            logits, target = logits[keep], target[keep]
        weight = None if self.class_weight is None else self.class_weight.to(logits)
        return F.cross_entropy(
            at_least_float32(logits), target, weight=weight, label_smoothing=self.label_smoothing
        )
