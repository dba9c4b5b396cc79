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


# The fastest backend for tensors on each device type, in order of preference among those that
# import. CPU: the torch backend, 1.2x the speed of spconv's CPU path on the synthetic config and
# 1.1-1.3x on a MinkUNet34C ScanNet room at 2 threads (bench_contention.py, bench_backbone.py,
# bench_profile.py; spconv's implicit GEMM is a CUDA kernel, its CPU path gathers and scatters
# per offset and gains little from a second thread). CUDA: spconv, then MinkowskiEngine,
# as the field measures them (spconv 2's implicit GEMM; Pointcept's and spconv's benchmarks).
FASTEST: dict[str, tuple[str, ...]] = {"cpu": ("torch",), "cuda": ("spconv", "minkowski", "torch")}


def check_backend_name(name: str) -> str:
    """``name`` itself once it is ``auto`` or a backend whose library imports here."""
    if name == "auto":
        return name
    if name not in BACKENDS:
        raise KeyError(f"unknown sparse backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'")
    if not is_available(name):
        raise ImportError(
            f"sparse backend {name!r} needs the {_LIBRARY[name]!r} package, which does not import "
            "here; install it or use model.backend=torch"
        )
    return name


def resolve_backend_name(name: str, device: str = "cpu") -> str:
    """The backend that runs tensors on ``device`` (a device type such as ``cpu`` or ``cuda``):
    ``auto`` → the first importable one of :data:`FASTEST` for that device; other names are
    checked and returned."""
    if name != "auto":
        return check_backend_name(name)
    for candidate in FASTEST.get(device, ("torch",)):
        if is_available(candidate):
            return candidate
    return "torch"


def get_backend(name: str = "auto", device: str = "cpu") -> Any:
    """The (stateless, shared) backend object for ``name`` on tensors of ``device`` (its type)."""
    name = resolve_backend_name(name, device)
    if name not in _INSTANCES:
        module_path, cls_name = BACKENDS[name]
        _INSTANCES[name] = getattr(importlib.import_module(module_path), cls_name)()
    return _INSTANCES[name]
