"""Sparse-convolution backends: each executes the same three ops on the module-owned weights.

A backend exposes ``name`` and
``subm_conv(x, weight (K³, C_in, C_out), kernel_size) -> SparseTensor`` (same sites),
``down_conv(x, weight (8, C_in, C_out)) -> SparseTensor`` (k=2, s=2, sites floor(c/2)),
``up_conv(x, weight (8, C_in, C_out)) -> SparseTensor`` (transposed, back to the encoder's sites).
Kernel offset index ``(a·K + b)·K + c`` is the dense kernel position ``[a, b, c]`` along
(x, y, z); see ``pointseg.sparse.nn`` for the mapping to dense conv3d weights.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → module path and class; modules are imported only when asked for, so a missing
# optional library (spconv, MinkowskiEngine) costs nothing until it is selected.
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("pointseg.sparse.backends.torch_backend", "TorchBackend"),
    "spconv": ("pointseg.sparse.backends.spconv_backend", "SpconvBackend"),
    "minkowski": ("pointseg.sparse.backends.minkowski_backend", "MinkowskiBackend"),
}

_LIBRARY = {"torch": "torch", "spconv": "spconv.pytorch", "minkowski": "MinkowskiEngine"}
_INSTANCES: dict[str, Any] = {}


def import_error(name: str) -> str | None:
    """Why the library behind backend ``name`` does not import here, or None when it does."""
    if name not in BACKENDS:
        raise KeyError(f"unknown sparse backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'")
    try:
        importlib.import_module(_LIBRARY[name])
    except Exception as e:  # an installed but broken build counts as unavailable
        return f"{_LIBRARY[name]}: {type(e).__name__}: {e}"
    return None


def is_available(name: str) -> bool:
    """Whether the library behind backend ``name`` imports here."""
    return import_error(name) is None


def available_backends() -> list[str]:
    return [name for name in BACKENDS if is_available(name)]


def resolve_backend_name(name: str) -> str:
    """``auto`` → ``spconv`` when importable, else ``torch``; other names are checked."""
    if name == "auto":
        return "spconv" if is_available("spconv") else "torch"
    if name not in BACKENDS:
        raise KeyError(f"unknown sparse backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'")
    if not is_available(name):
        raise ImportError(
            f"sparse backend {name!r} needs the {_LIBRARY[name]!r} package, which does not import "
            "here; install it or use model.backend=torch"
        )
    return name


def get_backend(name: str = "auto") -> Any:
    """The (stateless, shared) backend object for ``name``."""
    name = resolve_backend_name(name)
    if name not in _INSTANCES:
        module_path, cls_name = BACKENDS[name]
        _INSTANCES[name] = getattr(importlib.import_module(module_path), cls_name)()
    return _INSTANCES[name]
