"""Backend-neutral sparse tensor and convolution layers (spconv, MinkowskiEngine or pure torch)."""

from .backends import (
    BACKENDS,
    FASTEST,
    available_backends,
    check_backend_name,
    get_backend,
    is_available,
    resolve_backend_name,
)
from .nn import (
    BatchNorm,
    DownConv3d,
    ReLU,
    SubMConv3d,
    UpConv3d,
    cat,
    dense_to_sparse_weight,
    sparse_to_dense_weight,
)
from .tensor import SparseTensor

__all__ = [
    "BACKENDS",
    "FASTEST",
    "BatchNorm",
    "DownConv3d",
    "ReLU",
    "SparseTensor",
    "SubMConv3d",
    "UpConv3d",
    "available_backends",
    "cat",
    "check_backend_name",
    "dense_to_sparse_weight",
    "get_backend",
    "is_available",
    "resolve_backend_name",
    "sparse_to_dense_weight",
]
