"""Point classifiers: the head that turns per-voxel features into class logits (paper Table 1).

``learned``
    the MinkowskiEngine examples' final 1×1 convolution with bias: on sparse features a 1×1
    convolution is a linear map, so it is an ``nn.Linear``.
``etf``
    the "fixed point classifier" of Table 1: logits = W*ᵀ (A z) with W* the simplex ETF × α
    (the center branch's α and seed) and A a learned linear lift of the features to ``etf_dim``
    (``ceco.proj_dim``) ≥ K−1 dimensions, without bias or nonlinearity. A fixed ETF needs features of
    at least K−1 dimensions (199 for ScanNet200, MinkUNet34C gives 96); the lift makes A z those
    features. A ReLU or a frozen map there would cap every point's cosine to the frame (and so
    the attainable probabilities), which is why this variant has neither.

Both expose ``weight_matrix()``: the (K, D) rows w_k with logit_k = w_k · z (+ b_k), which the
collapse analysis compares with the class means.
"""

from __future__ import annotations

import torch
from torch import nn

from pointseg.losses.context import BuildContext
from pointseg.losses.etf import simplex_etf


class LinearClassifier(nn.Linear):
    """The learned point classifier (the final 1×1 conv with bias)."""

    def weight_matrix(self) -> torch.Tensor:
        return self.weight


class ETFPointClassifier(nn.Module):
    """A learned lift of the features to ``etf_dim`` dims, classified by a fixed simplex ETF × α."""

    def __init__(self, feature_dim: int, num_classes: int, etf_dim: int = 512, alpha: float = 5.0, etf_seed: int = 0) -> None:
        super().__init__()
        if etf_dim < num_classes - 1:
            raise ValueError(
                f"model.point_classifier=etf: the lift must map to at least num_classes - 1 = "
                f"{num_classes - 1} dims for a simplex ETF, got ceco.proj_dim={etf_dim}"
            )
        self.lift = nn.Linear(feature_dim, etf_dim, bias=False)
        self.register_buffer("etf", simplex_etf(num_classes, etf_dim, alpha, etf_seed))
        self.in_features, self.out_features = int(feature_dim), int(num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.lift(feat) @ self.etf.to(feat.dtype)

    def weight_matrix(self) -> torch.Tensor:
        return (self.lift.weight.T @ self.etf.to(self.lift.weight.dtype)).T


POINT_CLASSIFIERS: dict[str, type[nn.Module]] = {
    "learned": LinearClassifier,
    "etf": ETFPointClassifier,
}


def build_point_classifier(
    kind: str, ctx: BuildContext, etf_dim: int = 512, alpha: float = 5.0, etf_seed: int = 0
) -> nn.Module:
    """``model.point_classifier``: ``learned`` or ``etf`` (which shares the center branch's W*),
    from the run's feature width and number of classes (``ctx``)."""
    feature_dim, num_classes = ctx.require_feature_dim("model.point_classifier"), ctx.num_classes
    if kind not in POINT_CLASSIFIERS:
        raise ValueError(f"model.point_classifier: unknown {kind!r}; expected one of {sorted(POINT_CLASSIFIERS)}")
    if kind == "learned":
        return LinearClassifier(feature_dim, num_classes)
    return ETFPointClassifier(feature_dim, num_classes, etf_dim, alpha, etf_seed)


__all__ = ["ETFPointClassifier", "LinearClassifier", "POINT_CLASSIFIERS", "build_point_classifier"]
