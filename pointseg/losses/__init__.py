"""Segmentation losses and the auxiliary losses (the CeCo center collapse regularizer).

A config's ``loss`` section is a list of ``{name, weight, **kwargs}``; ``build_criteria`` turns it
into a ``Criteria`` module returning every term by name (``loss_<name>``), unweighted, so that each
is logged and the caller forms the weighted total. Losses whose class weights or prior come from
the training split's class counts (``class_weight: effective_number``, ``prior: points``) get them
from the build context (``BuildContext.class_counts``), read only when some entry needs them.

Auxiliary losses are training-only modules on the features (``AUX_LOSSES``): each is built by
``from_section(section, ctx)`` from its config section and the run's facts, carries its weight,
and returns named, unweighted terms from ``aux_terms(feat, logits, segment)``; the segmentor keeps
them under ``aux_losses.<name>``, which inference drops. The ``ceco`` section builds ``ceco``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from pointseg.data.stats import ClassCounts
from pointseg.utils.schema import check_registry_list, is_checked, plain

from .ceco import CenterCollapseLoss, center_pool
from .context import BuildContext
from .cross_entropy import CrossEntropyLoss
from .dice import DiceLoss
from .etf import simplex_etf
from .focal import FocalLoss
from .logit_adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss
from .lovasz import LovaszLoss

# Every name a config's ``loss`` list may use.
LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "lovasz": LovaszLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "logit_adjusted": LogitAdjustedLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
}
# Every training-only auxiliary loss, by the name its terms are logged under (``loss_<name>``).
AUX_LOSSES: dict[str, type[nn.Module]] = {
    "ceco": CenterCollapseLoss,
}
# State-dict prefix of the auxiliary losses in a segmentor: the one rule inference strips by.
AUX_PREFIX = "aux_losses."
# Set by the run (the training split's counts), never by a config.
CLASS_COUNTS_ARG = "class_counts"
# [LG] the baseline trains with cross-entropy alone.
DEFAULT_LOSS = [{"name": "cross_entropy", "weight": 1.0}]


def check_losses(items: Any) -> str | None:
    """What is wrong with a ``loss`` list ``[{name, weight, **kwargs}, ...]``, or None."""
    items = plain(items)
    if isinstance(items, (list, tuple)) and not items:
        return "must name at least one loss"
    if isinstance(items, (list, tuple)):
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and CLASS_COUNTS_ARG in item:
                return f"[{i}]: {CLASS_COUNTS_ARG} comes from the training data's stats.json, not from the config"
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


class AuxLoss(Protocol):
    """What the segmentor asks of an auxiliary loss (an ``nn.Module``); its class also has
    ``from_section(section, ctx: BuildContext)``, the builder ``build_aux_losses`` calls."""

    weight: float  # its λ in the total

    def aux_terms(self, feat: torch.Tensor, logits: torch.Tensor, segment: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """Named loss terms (``loss_<name>``), unweighted; the total adds ``weight`` × each."""
        ...


def build_aux_losses(sections: Iterable[tuple[str, Any]], ctx: BuildContext) -> nn.ModuleDict:
    """The auxiliary losses of ``(name, typed section)`` pairs, each ``AUX_LOSSES[name].from_section``."""
    out = nn.ModuleDict()
    for name, cfg in sections:
        if name not in AUX_LOSSES:
            raise ValueError(f"aux loss {name!r}: unknown; known: {sorted(AUX_LOSSES)}")
        out[name] = AUX_LOSSES[name].from_section(cfg, ctx)  # type: ignore[attr-defined]
    return out


def needs_class_counts(loss_cfg: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some entry of a ``loss`` list computes its weights or prior from class counts."""
    for entry in plain(loss_cfg):
        kwargs = {k: v for k, v in entry.items() if k not in ("name", "weight")}
        needs = getattr(LOSSES.get(entry.get("name")), "needs_class_counts", None)
        if needs is not None and needs(kwargs):
            return True
    return False


def build_criteria(
    loss_cfg: Sequence[Mapping[str, Any]],
    class_counts: ClassCounts | Callable[[], ClassCounts] | None = None,
    ctx: BuildContext | None = None,
) -> Criteria:
    """Build the point losses of a ``loss`` config list ``[{name, weight=1, **kwargs}, ...]``
    (a loaded config's is not checked again).

    ``class_counts``: the training split's per-class counts, or a function returning them (called
    once, and only if some entry needs them), for the entries whose class weights or prior come
    from counts; without them such an entry is an error. ``ctx``: the run's facts, whose
    counts are used when ``class_counts`` is not given.
    """
    if class_counts is None and ctx is not None:
        class_counts = lambda: ctx.class_counts("loss")  # noqa: E731
    checked = is_checked(loss_cfg)
    loss_cfg = plain(loss_cfg)
    problem = None if checked else check_losses(loss_cfg)
    if problem:
        raise ValueError(f"loss{problem}" if problem.startswith("[") else f"loss: {problem}")
    terms = []
    for i, entry in enumerate(loss_cfg):
        kwargs = dict(entry)
        name = kwargs.pop("name")
        weight = kwargs.pop("weight", 1.0)
        try:
            needs = getattr(LOSSES[name], "needs_class_counts", None)
            if needs is not None and needs(kwargs) and class_counts is not None:
                if callable(class_counts):
                    class_counts = class_counts()
                kwargs[CLASS_COUNTS_ARG] = class_counts
            module = LOSSES[name](**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss[{i}] ({name}): {e}") from e
        terms.append((name, module, float(weight)))
    return Criteria(terms)


__all__ = [
    "AUX_LOSSES",
    "AUX_PREFIX",
    "AuxLoss",
    "BuildContext",
    "build_aux_losses",
    "DEFAULT_LOSS",
    "LOSSES",
    "check_losses",
    "Criteria",
    "build_criteria",
    "CrossEntropyLoss",
    "LovaszLoss",
    "DiceLoss",
    "FocalLoss",
    "LogitAdjustedLoss",
    "BalancedSoftmaxLoss",
    "needs_class_counts",
    "CenterCollapseLoss",
    "center_pool",
    "simplex_etf",
]
