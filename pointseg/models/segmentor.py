"""Segmentor: backbone → point classifier, plus the training-only CeCo center branch, and the losses.

The segmentor owns its heads, as Pointcept's ``DefaultSegmentorV2`` does: the backbone returns
per-voxel features, ``classifier`` turns them into logits, and ``center_loss`` (training only)
pools the same features into class centers. Training mode returns the named loss terms and their
weighted total ``loss``; evaluation mode returns ``{"logits", "feat"}`` and does nothing beyond the
backbone and the classifier, so inference costs exactly what the plain network costs. A model
built with ``train=False`` has no center branch at all; ``strip_center_branch`` removes its keys
from a training checkpoint's state dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointseg.losses import Criteria, build_criteria
from pointseg.losses.ceco import CenterCollapseLoss, resolve_head
from pointseg.models import build_backbone
from pointseg.models.heads import build_point_classifier
from pointseg.sparse import SparseTensor

# State-dict prefix of the training-only center branch (the ``center_loss`` attribute).
CENTER_BRANCH_PREFIX = "center_loss."


class Segmentor(nn.Module):
    """``forward(batch)`` on a collated batch (``coords``, ``feat``, ``segment``).

    Training: ``{"loss": total with grad, "loss_<name>": detached term, ..., "loss_ceco": ...}``
    with total = Σ wᵢ·termᵢ + λ·L_CR. Evaluation: ``{"logits" (M, K), "feat" (M, D)}``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        criteria: Criteria,
        center_loss: CenterCollapseLoss | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
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
        feat = self.backbone(SparseTensor(feats=batch["feat"], coords=batch["coords"]))
        logits = self.classifier(feat)
        if not self.training:
            return {"logits": logits, "feat": feat}
        if "segment" not in batch:
            raise KeyError("Segmentor: training needs labels, the batch has no 'segment'")
        segment = batch["segment"]
        terms: "OrderedDict[str, torch.Tensor]" = self.criteria(logits, segment)
        total = self.criteria.weighted_sum(terms)
        if self.center_loss is not None:
            terms["loss_ceco"] = self.center_loss(feat, segment)
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
    ceco = _section(cfg, "ceco")
    head = resolve_head(ceco)

    backbone = build_backbone(name, in_channels, backend, **model)
    feature_dim = int(backbone.feature_dim)
    # The fixed-ETF point classifier shares the center branch's W* (same dim, α and seed).
    classifier = build_point_classifier(
        point_classifier, feature_dim, num_classes, head.proj_dim, head.alpha, int(ceco.get("etf_seed", 0))
    )
    criteria = build_criteria(cfg.get("loss") or [{"name": "cross_entropy", "weight": 1.0}])
    center_loss = None
    if train and ceco.get("enabled", False):
        data_root = _section(cfg, "data").get("root")
        center_loss = CenterCollapseLoss.from_config(
            ceco, feature_dim, num_classes, data_root=Path(data_root) if data_root else None
        )
    return Segmentor(backbone, classifier, criteria, center_loss)


__all__ = [
    "CENTER_BRANCH_PREFIX",
    "Segmentor",
    "build_segmentor",
    "strip_center_branch",
]
