"""Residual blocks of the MinkUNet family (MinkowskiEngine examples' BasicBlock / Bottleneck)."""

from __future__ import annotations

from torch import nn

from ..sparse import BatchNorm, ReLU, SparseTensor, SubMConv3d


class BasicBlock(nn.Module):
    """3×3×3 conv → BN → ReLU → 3×3×3 conv → BN, plus the (projected) input, → ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, backend: str = "auto") -> None:
        super().__init__()
        self.conv1 = SubMConv3d(inplanes, planes, 3, backend=backend)
        self.norm1 = BatchNorm(planes)
        self.conv2 = SubMConv3d(planes, planes, 3, backend=backend)
        self.norm2 = BatchNorm(planes)
        self.relu = ReLU()
        self.downsample = _projection(inplanes, planes * self.expansion, backend)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out.replace_feats(out.feats + residual.feats))


class Bottleneck(nn.Module):
    """1×1×1 reduce → 3×3×3 → 1×1×1 expand (×4), each with BN, residual, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, backend: str = "auto") -> None:
        super().__init__()
        self.conv1 = SubMConv3d(inplanes, planes, 1, backend=backend)
        self.norm1 = BatchNorm(planes)
        self.conv2 = SubMConv3d(planes, planes, 3, backend=backend)
        self.norm2 = BatchNorm(planes)
        self.conv3 = SubMConv3d(planes, planes * self.expansion, 1, backend=backend)
        self.norm3 = BatchNorm(planes * self.expansion)
        self.relu = ReLU()
        self.downsample = _projection(inplanes, planes * self.expansion, backend)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out.replace_feats(out.feats + residual.feats))


def _projection(inplanes: int, outplanes: int, backend: str) -> nn.Sequential | None:
    """1×1×1 conv + BN on the shortcut when the channel count changes."""
    if inplanes == outplanes:
        return None
    return nn.Sequential(SubMConv3d(inplanes, outplanes, 1, backend=backend), BatchNorm(outplanes))

