"""MinkUNet (Res16UNet) family: one ``MinkUNetBase``; each variant sets BLOCK, LAYERS, PLANES.

Layout as in the MinkowskiEngine examples (``minkunet.py``): a stem conv at stride 1, four
encoder stages (k=2 s=2 conv + BN + ReLU, then blocks) down to stride 16, four decoder stages
(k=2 s=2 transposed conv + BN + ReLU, concatenation with the encoder output of the same stride,
then blocks) back to stride 1. The backbone ends at the last decoder features: the point
classifier (the examples' final 1×1 conv) belongs to the ``Segmentor``, which also owns the
training-only center branch that reads the same features. The model never names a backend
library: every sparse layer carries a backend *name* that ``set_backend`` can change, and the
weights do not depend on it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..sparse import (
    BatchNorm,
    DownConv3d,
    ReLU,
    SparseTensor,
    SubMConv3d,
    UpConv3d,
    cat,
    check_backend_name,
)
from ..sparse.nn import _SparseConv
from ..sparse.tensor import fresh_cache
from .blocks import BasicBlock, Bottleneck


class MinkUNetBase(nn.Module):
    BLOCK: ClassVar[type[nn.Module] | None] = None
    LAYERS: ClassVar[tuple[int, ...]] = (2, 2, 2, 2, 2, 2, 2, 2)
    PLANES: ClassVar[tuple[int, ...]] = (32, 64, 128, 256, 256, 128, 96, 96)
    INIT_DIM: ClassVar[int] = 32

    def __init__(
        self, in_channels: int, backend: str = "auto", stem_kernel: int = 3, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        if self.BLOCK is None:
            raise TypeError(f"{type(self).__name__} is abstract: use a variant such as MinkUNet34C")
        self.backend = check_backend_name(backend)
        block, planes, layers, b = self.BLOCK, self.PLANES, self.LAYERS, self.backend
        exp = block.expansion
        self.in_channels = in_channels

        self.stem = nn.Sequential(
            SubMConv3d(in_channels, self.INIT_DIM, stem_kernel, backend=b), BatchNorm(self.INIT_DIM), ReLU()
        )
        # Encoder: stage i downsamples from stride 2**i to 2**(i+1), then runs LAYERS[i] blocks.
        inplanes = self.INIT_DIM
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        skip_planes = [self.INIT_DIM]
        for i in range(4):
            self.down.append(_conv_bn_relu(DownConv3d(inplanes, inplanes, backend=b), inplanes))
            self.enc.append(_stage(block, inplanes, planes[i], layers[i], b))
            inplanes = planes[i] * exp
            skip_planes.append(inplanes)
        # Decoder: stage j upsamples to stride 2**(3-j), concatenates that encoder output.
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for j in range(4):
            p = planes[4 + j]
            self.up.append(_conv_bn_relu(UpConv3d(inplanes, p, backend=b), p))
            self.dec.append(_stage(block, p + skip_planes[3 - j], p, layers[4 + j], b))
            inplanes = p * exp
        self.feature_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = bn_momentum

    def forward(self, x: SparseTensor) -> Tensor:
        """The last decoder features, (M, feature_dim), one row per input voxel."""
        if not isinstance(x, SparseTensor):
            raise TypeError(f"{type(self).__name__}: expected a SparseTensor, got {type(x).__name__}")
        if x.stride != 1:
            raise ValueError(f"{type(self).__name__}: input must be at stride 1, got {x.stride}")
        out = self.stem(fresh_cache(x))
        skips = [out]
        for down, enc in zip(self.down, self.enc):
            out = enc(down(out))
            skips.append(out)
        skips.pop()  # the stride-16 output is the decoder's input, not a skip
        for up, dec in zip(self.up, self.dec):
            out = dec(cat(up(out), skips.pop()))
        return out.feats

    def set_backend(self, name: str) -> "MinkUNetBase":
        """Run the same weights on another backend (``auto``, ``spconv``, ``minkowski``, ``torch``)."""
        self.backend = check_backend_name(name)
        for m in self.modules():
            if isinstance(m, _SparseConv):
                m.set_backend(self.backend)
        return self


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, BatchNorm(channels), ReLU())


def _stage(block: type[nn.Module], inplanes: int, planes: int, blocks: int, backend: str) -> nn.Sequential:
    layers = [block(inplanes, planes, backend=backend)]
    layers += [block(planes * block.expansion, planes, backend=backend) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def to_points(voxel_values: Tensor, inverse: Tensor) -> Tensor:
    """Per-voxel values → per-point values through the voxelization's ``inverse`` map."""
    if inverse.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"to_points: inverse must be an integer index, got {inverse.dtype}")
    if inverse.numel() and (int(inverse.min()) < 0 or int(inverse.max()) >= voxel_values.shape[0]):
        raise IndexError(
            f"to_points: inverse indexes voxels {int(inverse.min())}..{int(inverse.max())} "
            f"but there are {voxel_values.shape[0]}"
        )
    return voxel_values.index_select(0, inverse.to(device=voxel_values.device, dtype=torch.int64))


class MinkUNet14(MinkUNetBase):
    BLOCK = BasicBlock
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


class MinkUNet18(MinkUNetBase):
    BLOCK = BasicBlock
    LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)


class MinkUNet34(MinkUNetBase):
    BLOCK = BasicBlock
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


class MinkUNet50(MinkUNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


class MinkUNet101(MinkUNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 23, 2, 2, 2, 2)


class MinkUNet14A(MinkUNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


class MinkUNet14S(MinkUNet14):
    """Half the width of 14A: not a published variant, sized for CPU demos and the synthetic study."""

    INIT_DIM = 16
    PLANES = (16, 32, 64, 128, 64, 64, 48, 48)


class MinkUNet14B(MinkUNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


class MinkUNet14C(MinkUNet14):
    PLANES = (32, 64, 128, 256, 192, 192, 128, 128)


class MinkUNet14D(MinkUNet14):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


class MinkUNet18A(MinkUNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


class MinkUNet18B(MinkUNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


class MinkUNet18D(MinkUNet18):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


class MinkUNet34A(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 64)


class MinkUNet34B(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 32)


class MinkUNet34C(MinkUNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
