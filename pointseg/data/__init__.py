"""Scene loading, transforms, voxelization, dataset and collate (see docs/design.md).

The names below are imported on first use (PEP 562): ``pointseg.data.scene`` and
``pointseg.data.stats`` need numpy only, so preprocessing does not pay torch's import time.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# name → submodule that defines it
_EXPORTS = {
    "collate": "collate",
    "ScanNet200Dataset": "dataset",
    "build_dataset": "dataset",
    "load_scene": "scene",
    "TRANSFORMS": "transforms",
    "Compose": "transforms",
    "build_transforms": "transforms",
    "default_test_transforms": "transforms",
    "default_train_transforms": "transforms",
    "VoxelizeResult": "voxelize",
    "fragments": "voxelize",
    "grid_coordinates": "voxelize",
    "voxelize": "voxelize",
    "voxelize_points": "voxelize",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Importing a submodule binds its name on the package; ``collate`` and ``voxelize`` name
    both a submodule and a function, and the package's attribute stays the function (as when
    this file imported them all)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
