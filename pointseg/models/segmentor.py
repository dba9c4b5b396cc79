"""Segmentor: backbone + point classifier + training-only CeCo center branch + losses.

Training mode returns the named loss terms and their weighted total ``loss``; evaluation mode
returns ``{"logits", "feat"}`` and does nothing beyond the backbone, so inference costs exactly
what the plain backbone costs. A model built with ``train=False`` has no center branch at all;
``strip_center_branch`` removes its keys from a training checkpoint's state dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointseg.losses import Criteria, build_criteria
from pointseg.losses.ceco import CenterCollapseLoss, CenterProjection, simplex_etf
from pointseg.models import build_backbone
from pointseg.sparse import SparseTensor

# State-dict prefix of the training-only center branch (the ``center_loss`` attribute).
CENTER_BRANCH_PREFIX = "center_loss."
# Choices of ``model.point_classifier`` (paper Table 1).
POINT_CLASSIFIERS = ("learned", "etf")
# Defaults of the ``ceco`` config section (paper §4.2 and the authors' released code).
CECO_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "weight": 0.4,
    "projection": "frozen",
    "proj_dim": 512,
    "normalize": True,
    "alpha": 5.0,
    "classifier": "etf",
    "etf_seed": 0,
    "logit_adjust": False,
    "global_centers": False,
}


class ETFPointClassifier(nn.Module):
    """Point classifier fixed to a simplex ETF (paper Table 1, "fixed" point classifier).

    Point features go through a projection of the kind chosen for the center branch
    (``ceco.projection`` / ``ceco.proj_dim``, built from the same seed, so with a frozen
    projection points and centers are mapped alike) and are classified by the same W* as the
    centers (same ``etf_seed``, same matrix). Point features are not normalized: with
    α = 5 and K = 200 a unit-norm feature could not reach a point probability above ~0.43,
    while the unnormalized logit can grow with the feature norm as a learned classifier's does.
    """

    def __init__(
        self, feature_dim: int, num_classes: int, projection: str = "frozen", proj_dim: int = 512,
        alpha: float = 5.0, etf_seed: int = 0,
    ) -> None:
        super().__init__()
        if projection == "none" and feature_dim < num_classes - 1:
            raise ValueError(
                f"model.point_classifier=etf with ceco.projection=none needs a feature dim >= "
                f"num_classes - 1 ({feature_dim} < {num_classes - 1})"
            )
        self.projection = CenterProjection(feature_dim, proj_dim, projection, seed=int(etf_seed) + 1)
        self.register_buffer("etf", simplex_etf(num_classes, self.projection.out_dim, alpha, etf_seed))
        self.in_features, self.out_features = int(feature_dim), int(num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.projection(feat) @ self.etf.to(feat.dtype)


class Segmentor(nn.Module):
    """``forward(batch)`` on a collated batch (``coords``, ``feat``, ``segment``).

    Training: ``{"loss": total with grad, "loss_<name>": detached term, ..., "loss_ceco": ...}``
    with total = Σ wᵢ·termᵢ + λ·L_CR. Evaluation: ``{"logits" (M, K), "feat" (M, D)}``.
    """

    def __init__(
        self, backbone: nn.Module, criteria: Criteria, center_loss: CenterCollapseLoss | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.criteria = criteria
        self.center_loss = center_loss

    @property
    def etf(self) -> torch.Tensor | None:
        """The center branch's fixed classifier W* (for the checkpoint), if it has one."""
        return None if self.center_loss is None else self.center_loss.etf

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        for key in ("coords", "feat"):
            if key not in batch:
                raise KeyError(f"Segmentor: batch has no {key!r} (keys: {sorted(batch)})")
        out = self.backbone(SparseTensor(feats=batch["feat"], coords=batch["coords"]))
        if not self.training:
            return {"logits": out["logits"], "feat": out["feat"]}
        if "segment" not in batch:
            raise KeyError("Segmentor: training needs labels, the batch has no 'segment'")
        segment = batch["segment"]
        terms: "OrderedDict[str, torch.Tensor]" = self.criteria(out["logits"], segment)
        total = self.criteria.weighted_sum(terms)
        if self.center_loss is not None:
            terms["loss_ceco"] = self.center_loss(out["feat"], segment)
            total = total + self.center_loss.weight * terms["loss_ceco"]
        result = {"loss": total}
        result.update((k, v.detach()) for k, v in terms.items())
        return result


def strip_center_branch(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """The state dict without the center branch's entries (also under a DDP ``module.`` prefix)."""
    return OrderedDict(
        (k, v) for k, v in state_dict.items()
        if not (k.startswith(CENTER_BRANCH_PREFIX) or f".{CENTER_BRANCH_PREFIX}" in k)
    )


def _plain(cfg: Any) -> Any:
    if hasattr(cfg, "_metadata"):  # OmegaConf container
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"config section {name!r} must be a mapping, got {type(value).__name__}")
    return dict(value)


def build_segmentor(cfg: Mapping[str, Any], train: bool = True) -> Segmentor:
    """Segmentor from the ``model``, ``ceco``, ``loss`` (and ``data.root``) config sections.

    ``train=False`` builds the evaluation model: no center branch is constructed, so it has no
    center-branch parameters or buffers (load a training state dict through
    ``strip_center_branch``).
    """
    cfg = _plain(cfg)
    model = _section(cfg, "model")
    for key in ("name", "in_channels", "num_classes"):
        if key not in model:
            raise ValueError(f"config: model.{key} is missing")
    name = model.pop("name")
    in_channels = int(model.pop("in_channels"))
    num_classes = int(model.pop("num_classes"))
    backend = model.pop("backend", "auto")
    point_classifier = model.pop("point_classifier", "learned")
    if point_classifier not in POINT_CLASSIFIERS:
        raise ValueError(f"model.point_classifier: unknown {point_classifier!r}; expected one of {POINT_CLASSIFIERS}")
    ceco = {**CECO_DEFAULTS, **_section(cfg, "ceco")}

    backbone = build_backbone(name, in_channels, num_classes, backend, **model)
    feature_dim = int(backbone.feature_dim)
    if point_classifier == "etf":
        # The backbone applies ``self.classifier`` to its last-stage features.
        backbone.classifier = ETFPointClassifier(
            feature_dim, num_classes, ceco["projection"], ceco["proj_dim"], ceco["alpha"], ceco["etf_seed"]
        )
    criteria = build_criteria(cfg.get("loss") or [{"name": "cross_entropy", "weight": 1.0}])
    center_loss = None
    if train and ceco.pop("enabled"):
        data_root = _section(cfg, "data").get("root")
        center_loss = CenterCollapseLoss.from_config(
            ceco, feature_dim, num_classes, data_root=Path(data_root) if data_root else None
        )
    return Segmentor(backbone, criteria, center_loss)


__all__ = [
    "CECO_DEFAULTS",
    "CENTER_BRANCH_PREFIX",
    "ETFPointClassifier",
    "POINT_CLASSIFIERS",
    "Segmentor",
    "build_segmentor",
    "strip_center_branch",
]
