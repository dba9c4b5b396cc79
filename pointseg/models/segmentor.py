"""Segmentor: backbone → point classifier, plus the training-only CeCo center branch, and the losses.

The segmentor owns its heads, as Pointcept's ``DefaultSegmentorV2`` does: the backbone returns
per-voxel features, ``classifier`` turns them into logits, and ``center_loss`` (training only)
pools the same features into class centers. Training mode returns the named loss terms and their
weighted total ``loss``; evaluation mode returns ``{"logits", "feat"}`` and does nothing beyond the
backbone and the classifier, so inference costs exactly what the plain network costs. A model
built with ``train=False`` has no center branch and no losses at all; ``strip_center_branch``
removes the branch's keys from a training checkpoint's state dict.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from pointseg.data.dataset import DEFAULT_FEATURES
from pointseg.data.dataset import in_channels as dataset_in_channels
from pointseg.data.stats import train_class_counts
from pointseg.losses import DEFAULT_LOSS, Criteria, build_criteria
from pointseg.losses.ceco import CenterCollapseLoss, ceco_section, resolve_head
from pointseg.models import BACKBONES, build_backbone
from pointseg.models.heads import POINT_CLASSIFIERS, build_point_classifier
from pointseg.sparse import BACKENDS, SparseTensor
from pointseg.utils.schema import (
    at_least,
    in_range,
    one_of,
    param,
    positive,
    typed,
    validate_section,
)

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
        criteria: Criteria | None,
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
        if self.criteria is None:
            raise RuntimeError("Segmentor: an evaluation model (built with train=False) has no losses to train with")
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


def _backbone_name(v: Any) -> str | None:
    return None if v in BACKBONES else f"must be one of {sorted(BACKBONES)}"


def _backend_name(v: Any) -> str | None:
    return None if v == "auto" or v in BACKENDS else f"must be auto or one of {sorted(BACKENDS)}"


@dataclass
class ModelConfig:
    """The ``model`` section: the backbone and the point classifier."""

    name: str = param("MinkUNet34C", "[paper] MinkUNet34C = [LG] Res16UNet34C; any of models.BACKBONES", _backbone_name)
    backend: str = param("auto", "[ours] auto | spconv | minkowski | torch: the same weights run on each", _backend_name)
    in_channels: Optional[int] = param(None, "input channels; null: derived from data.features (3 each), which it must match", positive)
    num_classes: int = param(200, "[paper] ScanNet200's classes", at_least(2))
    bn_momentum: float = param(0.02, "[LG] --bn_momentum 0.02 (PyTorch's meaning; its own default is 0.1)", in_range(0.0, 1.0))
    stem_kernel: int = param(3, "[LG] conv1_kernel_size of Res16UNet34C", positive)
    point_classifier: str = param("learned", "[paper] learned | etf (Table 1's fixed point classifier)", one_of(*POINT_CLASSIFIERS))


def resolve_in_channels(model_in_channels: int | None, features: Sequence[str], where: str = "config") -> int:
    """``model.in_channels``: derived from ``data.features``; a value set by hand must agree."""
    derived = dataset_in_channels(features)
    if model_in_channels is not None and int(model_in_channels) != derived:
        raise ValueError(
            f"{where}: model.in_channels is {model_in_channels} but data.features {list(features)} give "
            f"{derived} channels; leave model.in_channels unset (null) to derive it"
        )
    return derived


def build_segmentor(cfg: Mapping[str, Any] | Any, train: bool = True) -> Segmentor:
    """Segmentor from the ``model``, ``ceco``, ``loss`` (and ``data``) sections of a config,
    complete or partial (missing keys take the schema's defaults).

    ``train=False`` builds the evaluation model: no center branch is constructed, so it has no
    center-branch parameters or buffers (load a training state dict through
    ``strip_center_branch``), and no losses, which may need the training data's class counts.
    """
    model = typed(ModelConfig, cfg.get("model"), "model")
    validate_section(ModelConfig, model, "model")
    data = cfg.get("data") or {}  # a partial config may lack the section or the key, never empty them
    features = data.get("features") if data.get("features") is not None else DEFAULT_FEATURES
    in_channels = resolve_in_channels(model.in_channels, list(features))
    ceco = ceco_section(cfg.get("ceco"))
    head = resolve_head(ceco)

    backbone = build_backbone(
        model.name, in_channels, model.backend, stem_kernel=model.stem_kernel, bn_momentum=model.bn_momentum
    )
    feature_dim = int(backbone.feature_dim)
    # The fixed-ETF point classifier uses the center branch's α and seed in ceco.proj_dim dims: the
    # same W* as the branch's when the branch projects (with projection: none, the branch's is smaller).
    classifier = build_point_classifier(
        model.point_classifier, feature_dim, model.num_classes, head.proj_dim, head.alpha, ceco.etf_seed
    )
    if not train:
        return Segmentor(backbone, classifier, None, None)
    root = Path(data["root"]) if data.get("root") else None
    # Read (once, and only if a loss asks) from DATA/stats.json: the counts behind CeCo's prior too.
    counts = functools.partial(train_class_counts, root, model.num_classes, "loss")
    criteria = build_criteria(cfg.get("loss") if cfg.get("loss") is not None else DEFAULT_LOSS, counts)
    center_loss = None
    if ceco.enabled:
        center_loss = CenterCollapseLoss.from_config(ceco, feature_dim, model.num_classes, root)
    return Segmentor(backbone, classifier, criteria, center_loss)


__all__ = [
    "CENTER_BRANCH_PREFIX",
    "ModelConfig",
    "resolve_in_channels",
    "Segmentor",
    "build_segmentor",
    "strip_center_branch",
]
