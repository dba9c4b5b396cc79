"""Segmentor: backbone → point classifier, plus the training-only auxiliary losses, and the losses.

The segmentor owns its heads, as Pointcept's ``DefaultSegmentorV2`` does: the backbone returns
per-voxel features, ``classifier`` turns them into logits, and ``aux_losses`` (training only: the
CeCo center branch, any other of ``pointseg.losses.AUX_LOSSES``) add their terms on the same
features. Training mode returns the named loss terms and their weighted total ``loss``;
evaluation mode returns ``{"logits", "feat"}`` and does nothing beyond the backbone and the
classifier, so inference costs exactly what the plain network costs. A model built with
``train=False`` has no auxiliary losses and no losses at all; ``strip_aux_losses`` removes their
keys (one prefix, ``aux_losses.``) from a training checkpoint's state dict.

The builders take their typed config section and one :class:`BuildContext` of the run's facts
(:func:`build_context`): a loaded config's sections are used as they are, never checked again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from pointseg.data.dataset import DEFAULT_FEATURES
from pointseg.data.dataset import in_channels as dataset_in_channels
from pointseg.datasets import spec_of
from pointseg.losses import AUX_PREFIX, DEFAULT_LOSS, BuildContext, Criteria, build_aux_losses, build_criteria
from pointseg.losses.ceco import ceco_section, resolve_head
from pointseg.models import BACKBONES, build_backbone
from pointseg.models.heads import POINT_CLASSIFIERS, build_point_classifier
from pointseg.sparse import BACKENDS, SparseTensor
from pointseg.utils.schema import (
    at_least,
    in_range,
    one_of,
    param,
    positive,
    section,
)

# State-dict prefix of the CeCo center branch, the auxiliary loss ``ceco``.
CENTER_BRANCH_PREFIX = f"{AUX_PREFIX}ceco."


class Segmentor(nn.Module):
    """``forward(batch)`` on a collated batch (``coords``, ``feat``, ``segment``).

    Training: ``{"loss": total with grad, "loss_<name>": detached term, ..., "loss_ceco": ...}``
    with total = Σ wᵢ·termᵢ + Σ λⱼ·auxⱼ (CeCo: λ·L_CR). Evaluation: ``{"logits" (M, K), "feat" (M, D)}``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        criteria: Criteria | None,
        aux_losses: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.criteria = criteria
        self.aux_losses = nn.ModuleDict(dict(aux_losses or {}))

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
        for aux in self.aux_losses.values():
            for key, value in aux.aux_terms(feat, logits, segment).items():
                if key in terms:
                    raise ValueError(f"Segmentor: two losses return the term {key!r}")
                terms[key] = value
                total = total + aux.weight * value
        result = {"loss": total}
        result.update((k, v.detach()) for k, v in terms.items())
        return result


def strip_aux_losses(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """The state dict without the auxiliary losses' entries (also under a DDP ``module.`` prefix)."""
    return OrderedDict(
        (k, v) for k, v in state_dict.items() if not (k.startswith(AUX_PREFIX) or f".{AUX_PREFIX}" in k)
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
    num_classes: Optional[int] = param(None, "null: the classes of data.dataset (ScanNet200: 200 [paper]; data.classes: their number); a value set by hand must agree when scenes are loaded", at_least(2))
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


def resolve_num_classes(cfg: Mapping[str, Any] | Any) -> int:
    """The number of classes of a run, the one place it is read: ``model.num_classes`` when set
    (a loaded config always has it, derived at load), else the label space of the ``data``
    section (``data.dataset``, ``data.classes``; ScanNet200 when a partial config lacks them)."""
    model = cfg.get("model") or {}
    value = model.get("num_classes")
    return int(value) if value is not None else spec_of(cfg.get("data") or {}).num_classes


def build_context(cfg: Mapping[str, Any] | Any, feature_dim: int | None = None) -> BuildContext:
    """The run facts every builder of a model receives (one context per model): the number of
    classes, the data root (whose ``stats.json`` gives the class counts, read once and only if a
    builder asks) and, once the backbone is built, the feature width."""
    data = cfg.get("data") or {}  # a partial config may lack the section or the key, never empty them
    root = data.get("root")
    return BuildContext(resolve_num_classes(cfg), feature_dim, Path(root) if root else None, spec_of(data))


def aux_loss_sections(ceco: Any) -> list[tuple[str, Any]]:
    """``(name, typed section)`` of every auxiliary loss a config turns on. The ``ceco`` section
    (typed) is the sugar for the auxiliary loss ``ceco``: on when ``ceco.enabled``."""
    return [("ceco", ceco)] if ceco.enabled else []


def build_segmentor(cfg: Mapping[str, Any] | Any, train: bool = True, ctx: BuildContext | None = None) -> Segmentor:
    """Segmentor from the ``model``, ``ceco``, ``loss`` (and ``data``) sections of a config: a loaded
    one (its sections used as they are) or a partial one (missing keys take the schema's
    defaults; each section typed and checked once, here).

    ``ctx``: the run's facts (:func:`build_context` of ``cfg`` when not given). ``train=False``
    builds the evaluation model: no auxiliary loss is constructed, so it has none of their
    parameters or buffers (load a training state dict through ``strip_aux_losses``), and no
    losses, which may need the training data's class counts.
    """
    model = section(ModelConfig, cfg.get("model"), "model")
    data = cfg.get("data") or {}
    features = data.get("features") if data.get("features") is not None else DEFAULT_FEATURES
    in_channels = resolve_in_channels(model.in_channels, list(features))
    ceco = ceco_section(cfg.get("ceco"))
    head = resolve_head(ceco)

    backbone = build_backbone(
        model.name, in_channels, model.backend, stem_kernel=model.stem_kernel, bn_momentum=model.bn_momentum
    )
    ctx = (build_context(cfg) if ctx is None else ctx).with_feature_dim(backbone.feature_dim)
    # The fixed-ETF point classifier uses the center branch's α and seed in ceco.proj_dim dims: the
    # same W* as the branch's when the branch projects (with projection: none, the branch's is smaller).
    classifier = build_point_classifier(model.point_classifier, ctx, head.proj_dim, head.alpha, ceco.etf_seed)
    if not train:
        return Segmentor(backbone, classifier, None, None)
    criteria = build_criteria(cfg.get("loss") if cfg.get("loss") is not None else DEFAULT_LOSS, ctx=ctx)
    return Segmentor(backbone, classifier, criteria, build_aux_losses(aux_loss_sections(ceco), ctx))


__all__ = [
    "CENTER_BRANCH_PREFIX",
    "ModelConfig",
    "aux_loss_sections",
    "build_context",
    "resolve_in_channels",
    "resolve_num_classes",
    "Segmentor",
    "build_segmentor",
    "strip_aux_losses",
]
