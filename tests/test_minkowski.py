"""The minkowski backend equals MinkowskiEngine's own modules with the same weights.

``tests/test_sparse_ops.py`` checks every backend against dense PyTorch convolutions; this file
checks the call into ME (argument order, coordinate keys, strides, row order) against the way ME
itself runs ``MinkowskiConvolution`` / ``MinkowskiConvolutionTranspose`` on an ``ME.SparseTensor``.
"""

from __future__ import annotations

import pytest
import torch

from pointseg.sparse import DownConv3d, SparseTensor, SubMConv3d, UpConv3d, is_available

pytestmark = [
    pytest.mark.skipif(not is_available("minkowski"), reason="minkowski not installed"),
    # ME's modules instantiate their autograd Functions, which current torch deprecates
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]
if is_available("minkowski"):
    import MinkowskiEngine as ME

    from pointseg.sparse.backends.minkowski_backend import to_minkowski_weight

C_IN, C_OUT = 4, 6


def sites(seed: int, n: int = 300, size: int = 12) -> torch.Tensor:
    """Distinct voxels of two batch entries in a shuffled order (int32, (M, 4))."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.cat([torch.randint(2, (n, 1), generator=g), torch.randint(size, (n, 3), generator=g)], 1)
    coords = torch.unique(coords, dim=0)
    return coords[torch.randperm(len(coords), generator=g)].to(torch.int32).contiguous()


def by_site(coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Rows of ``feats`` sorted by their (batch, x, y, z) coordinates: a row order both sides share."""
    c = coords.long()
    key = ((c[:, 0] * 1024 + c[:, 1]) * 1024 + c[:, 2]) * 1024 + c[:, 3]
    return feats[torch.argsort(key)]


def leaf(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def me_input(coords: torch.Tensor, feats: torch.Tensor) -> "ME.SparseTensor":
    # ME's coordinates are in input-voxel units; stride 1 here, so ours as they are.
    return ME.SparseTensor(feats, coords, coordinate_manager=ME.CoordinateManager(D=3))


def backward_with(out: torch.Tensor, coords: torch.Tensor) -> None:
    """Backpropagate a cotangent that is a function of (site, channel), so any row order agrees."""
    c = coords.float()
    cot = torch.sin(c @ torch.tensor([0.7, 0.37, 1.1, 0.53]))[:, None] + torch.arange(out.shape[1]) * 0.3
    (out * cot).sum().backward()


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_subm_conv_equals_minkowski_convolution(kernel_size):
    coords = sites(0)
    feats = leaf((len(coords), C_IN), 1)
    ours = SubMConv3d(C_IN, C_OUT, kernel_size, backend="minkowski")
    out = ours(SparseTensor(feats, coords))
    backward_with(out.feats, coords)

    feats_me = feats.detach().clone().requires_grad_(True)
    conv = ME.MinkowskiConvolution(C_IN, C_OUT, kernel_size=kernel_size, stride=1, dimension=3)
    conv.kernel.data.copy_(to_minkowski_weight(ours.weight.detach(), kernel_size))
    ref = conv(me_input(coords, feats_me))
    backward_with(ref.F, ref.C)

    torch.testing.assert_close(by_site(coords, out.feats), by_site(ref.C, ref.F), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats.grad, feats_me.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_minkowski_weight(ours.weight.grad, kernel_size), conv.kernel.grad, rtol=1e-4, atol=1e-5)


def test_down_and_up_conv_equal_minkowski_strided_and_transposed_convolution():
    coords = sites(3)
    feats = leaf((len(coords), C_IN), 4)
    down = DownConv3d(C_IN, C_OUT, backend="minkowski")
    up = UpConv3d(C_OUT, C_IN, backend="minkowski")
    coarse = down(SparseTensor(feats, coords))
    fine = up(coarse)
    backward_with(fine.feats, fine.coords)

    feats_me = feats.detach().clone().requires_grad_(True)
    me_down = ME.MinkowskiConvolution(C_IN, C_OUT, kernel_size=2, stride=2, dimension=3)
    me_up = ME.MinkowskiConvolutionTranspose(C_OUT, C_IN, kernel_size=2, stride=2, dimension=3)
    me_down.kernel.data.copy_(to_minkowski_weight(down.weight.detach(), 2))
    me_up.kernel.data.copy_(to_minkowski_weight(up.weight.detach(), 2))
    me_coarse = me_down(me_input(coords, feats_me))
    me_fine = me_up(me_coarse)
    backward_with(me_fine.F, me_fine.C)

    # the stride-2 level: same sites (ME's in input units, ours in the coarse grid's), same features
    assert coarse.stride == 2 and me_coarse.tensor_stride == [2, 2, 2]
    me_sites = me_coarse.C.clone()
    me_sites[:, 1:] //= 2
    assert torch.equal(by_site(coarse.coords, coarse.coords), by_site(me_sites, me_sites))
    torch.testing.assert_close(by_site(coarse.coords, coarse.feats), by_site(me_sites, me_coarse.F), rtol=1e-4, atol=1e-5)
    # back at stride 1: the encoder's sites, features and every gradient
    assert fine.stride == 1 and torch.equal(fine.coords, coords)
    torch.testing.assert_close(by_site(coords, fine.feats), by_site(me_fine.C, me_fine.F), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats.grad, feats_me.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_minkowski_weight(down.weight.grad, 2), me_down.kernel.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_minkowski_weight(up.weight.grad, 2), me_up.kernel.grad, rtol=1e-4, atol=1e-5)
