"""Backend-neutral sparse layers: they own the weights, a backend only executes them.

Weight layout, the same for every backend (so checkpoints are backend-neutral):
``weight`` has shape ``(K³, C_in, C_out)``, offset index ``k = (a·K + b)·K + c`` for the kernel
position ``[a, b, c]`` along the coordinate axes (x, y, z). In dense PyTorch terms:

* ``SubMConv3d`` ≡ ``conv3d(dense, w, padding=K//2)`` read at the input sites, with
  ``weight = w.permute(2, 3, 4, 1, 0).reshape(K³, C_in, C_out)`` (``w``: (C_out, C_in, K, K, K));
* ``DownConv3d`` ≡ ``conv3d(dense, w, stride=2)`` (kernel 2) read at the sites ``floor(c / 2)``,
  same reshaping;
* ``UpConv3d`` ≡ ``conv_transpose3d(dense, w, stride=2)`` (kernel 2) read at the encoder's sites,
  with ``weight = w.permute(2, 3, 4, 0, 1).reshape(8, C_in, C_out)`` (``w``: (C_in, C_out, 2, 2, 2)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backends import check_backend_name, get_backend
from .tensor import SparseTensor


def dense_to_sparse_weight(w: Tensor, transposed: bool = False) -> Tensor:
    """Dense ``conv3d`` (or ``conv_transpose3d``) weight → the ``(K³, C_in, C_out)`` layout."""
    perm = (2, 3, 4, 0, 1) if transposed else (2, 3, 4, 1, 0)
    p = w.permute(*perm)
    return p.reshape(-1, p.shape[3], p.shape[4]).contiguous()


def sparse_to_dense_weight(weight: Tensor, kernel_size: int, transposed: bool = False) -> Tensor:
    """Inverse of :func:`dense_to_sparse_weight`."""
    k = kernel_size
    w = weight.reshape(k, k, k, weight.shape[1], weight.shape[2])
    return (w.permute(3, 4, 0, 1, 2) if transposed else w.permute(4, 3, 0, 1, 2)).contiguous()


class _SparseConv(nn.Module):
    """Shared state of the three convolutions: weight, channel check, backend name."""

    kernel_size: int

    def __init__(self, in_channels: int, out_channels: int, backend: str = "auto") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(self.kernel_size**3, in_channels, out_channels))
        self.backend = check_backend_name(backend)  # auto: chosen per call by the input's device
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # MinkowskiEngine's init: kaiming normal, fan_out, relu (on its (K³, C_in, C_out) kernel
        # PyTorch's fan computation reads dims 1 and 0, so compute the fan explicitly).
        std = math.sqrt(2.0 / (self.out_channels * self.kernel_size**3))
        with torch.no_grad():
            self.weight.normal_(0.0, std)

    def set_backend(self, name: str) -> None:
        self.backend = check_backend_name(name)

    def _check(self, x: SparseTensor) -> None:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"{type(self).__name__}: expected a SparseTensor, got {type(x).__name__}")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: input has {x.feats.shape[1]} feature channels, "
                f"layer expects {self.in_channels}"
            )

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, backend={self.backend}"


class SubMConv3d(_SparseConv):
    """Submanifold convolution: output sites = input sites (no dilation of the occupancy)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, backend: str = "auto") -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"SubMConv3d: kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        super().__init__(in_channels, out_channels, backend)

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check(x)
        if self.kernel_size == 1:  # a 1×1×1 convolution is a linear map of the features
            return x.replace_feats(x.feats @ self.weight[0])
        return get_backend(self.backend, x.feats.device.type).subm_conv(x, self.weight, self.kernel_size)


class DownConv3d(_SparseConv):
    """Kernel 2, stride 2 convolution: output sites are the unique ``floor(coords / 2)``."""

    kernel_size = 2

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check(x)
        return get_backend(self.backend, x.feats.device.type).down_conv(x, self.weight)


class UpConv3d(_SparseConv):
    """Transposed kernel 2, stride 2 convolution back onto the encoder's sites at ``stride / 2``."""

    kernel_size = 2

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check(x)
        if x.stride < 2:
            raise ValueError(f"UpConv3d: input stride {x.stride} has no finer encoder level")
        return get_backend(self.backend, x.feats.device.type).up_conv(x, self.weight)


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm over the voxel features (γ=1, β=0 at init, as nn.BatchNorm1d)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_feats(super().forward(x.feats))


class ReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace_feats(torch.relu(x.feats))


def cat(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """Channel concatenation of two tensors on the same sites (U-Net skip connection)."""
    if a.stride != b.stride or a.feats.shape[0] != b.feats.shape[0]:
        raise ValueError(
            f"cat: tensors on different sites (stride {a.stride} vs {b.stride}, "
            f"{a.feats.shape[0]} vs {b.feats.shape[0]} voxels)"
        )
    return a.replace_feats(torch.cat([a.feats, b.feats], dim=1))
