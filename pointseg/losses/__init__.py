"""Segmentation losses and the CeCo center collapse regularizer.

A config's ``loss`` section is a list of ``{name, weight, **kwargs}``; ``build_criteria`` turns it
into a ``Criteria`` module returning every term by name (``loss_<name>``), unweighted, so that each
is logged and the caller forms the weighted total.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pointseg.utils.schema import check_registry_list

from .ceco import CenterCollapseLoss, center_pool, simplex_etf
from .cross_entropy import CrossEntropyLoss
from .dice import DiceLoss
from .focal import FocalLoss
from .lovasz import LovaszLoss

# Every name a config's ``loss`` list may use.
LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "lovasz": LovaszLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
}
# [LG] the baseline trains with cross-entropy alone.
DEFAULT_LOSS = [{"name": "cross_entropy", "weight": 1.0}]


def check_losses(items: Any) -> str | None:
    """What is wrong with a ``loss`` list ``[{name, weight, **kwargs}, ...]``, or None."""
    items = _plain(items)
    if isinstance(items, (list, tuple)) and not items:
        return "must name at least one loss"
    return check_registry_list(items, LOSSES, reserved=("weight",))


class Criteria(nn.Module):
    """Several point losses applied to the same logits; returns each term by name, unweighted."""

    def __init__(self, terms: Sequence[tuple[str, nn.Module, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("loss: the list of loss terms is empty")
        names = [n for n, _, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss: a loss name appears twice in {names}")
        self.names: list[str] = names
        self.terms = nn.ModuleDict({n: m for n, m, _ in terms})
        self.weights: dict[str, float] = {f"loss_{n}": float(w) for n, _, w in terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict((f"loss_{n}", self.terms[n](logits, target)) for n in self.names)

    def weighted_sum(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Σ weight · term over this module's terms."""
        return sum(self.weights[k] * losses[k] for k in self.weights)  # type: ignore[return-value]


def _plain(cfg: Any) -> Any:
    """OmegaConf containers → plain Python (without importing OmegaConf when not used)."""
    if hasattr(cfg, "_metadata"):  # DictConfig / ListConfig
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build_criteria(loss_cfg: Sequence[Mapping[str, Any]]) -> Criteria:
    """Build the point losses of a ``loss`` config list ``[{name, weight=1, **kwargs}, ...]``."""
    loss_cfg = _plain(loss_cfg)
    problem = check_losses(loss_cfg)
    if problem:
        raise ValueError(f"loss{problem}" if problem.startswith("[") else f"loss: {problem}")
    terms = []
    for i, entry in enumerate(loss_cfg):
        kwargs = dict(entry)
        name = kwargs.pop("name")
        weight = kwargs.pop("weight", 1.0)
        try:
            module = LOSSES[name](**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss[{i}] ({name}): {e}") from e
        terms.append((name, module, float(weight)))
    return Criteria(terms)


__all__ = [
    "DEFAULT_LOSS",
    "LOSSES",
    "check_losses",
    "Criteria",
    "build_criteria",
    "CrossEntropyLoss",
    "LovaszLoss",
    "DiceLoss",
    "FocalLoss",
    "CenterCollapseLoss",
    "center_pool",
    "simplex_etf",
]
