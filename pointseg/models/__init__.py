"""Backbones (MinkUNet family) and the registry configs name them by."""

from __future__ import annotations

from torch import nn

from .minkunet import (
    MinkUNet14,
    MinkUNet14A,
    MinkUNet14B,
    MinkUNet14C,
    MinkUNet14D,
    MinkUNet14S,
    MinkUNet18,
    MinkUNet18A,
    MinkUNet18B,
    MinkUNet18D,
    MinkUNet34,
    MinkUNet34A,
    MinkUNet34B,
    MinkUNet34C,
    MinkUNet50,
    MinkUNet101,
    MinkUNetBase,
    to_points,
)

BACKBONES: dict[str, type[MinkUNetBase]] = {
    "MinkUNet14": MinkUNet14,
    "MinkUNet14A": MinkUNet14A,
    "MinkUNet14B": MinkUNet14B,
    "MinkUNet14C": MinkUNet14C,
    "MinkUNet14D": MinkUNet14D,
    "MinkUNet14S": MinkUNet14S,
    "MinkUNet18": MinkUNet18,
    "MinkUNet18A": MinkUNet18A,
    "MinkUNet18B": MinkUNet18B,
    "MinkUNet18D": MinkUNet18D,
    "MinkUNet34": MinkUNet34,
    "MinkUNet34A": MinkUNet34A,
    "MinkUNet34B": MinkUNet34B,
    "MinkUNet34C": MinkUNet34C,
    "MinkUNet50": MinkUNet50,
    "MinkUNet101": MinkUNet101,
}


def build_backbone(name: str, in_channels: int, backend: str = "auto", **kw) -> nn.Module:
    """``BACKBONES[name](in_channels, backend=backend, **kw)`` (kw: ``stem_kernel``, ``bn_momentum``)."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels, backend=backend, **kw)


__all__ = ["BACKBONES", "MinkUNetBase", "build_backbone", "to_points", *BACKBONES]
