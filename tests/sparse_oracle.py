"""The dense oracle of the sparse-op tests: random occupied sites, dense grids, gradient checks."""

from __future__ import annotations

import torch

from pointseg.sparse import dense_to_sparse_weight

GRID = (10, 8, 6)  # even, so floor(c / 2) tiles the grid exactly
BATCH = 4  # more than two scenes, so batch indices use more than one bit of the packed keys
C_IN, C_OUT = 5, 7


def random_sites(seed: int, density: float = 0.3) -> torch.Tensor:
    """Occupied voxels of ``BATCH`` scenes, shuffled so no backend can rely on input order."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand((BATCH, *GRID), generator=g) < density
    coords = occ.nonzero().to(torch.int32)
    return coords[torch.randperm(coords.shape[0], generator=g)].contiguous()


def to_dense(feats: torch.Tensor, coords: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, C, X, Y, Z) grid holding ``feats`` at ``coords`` (differentiable in ``feats``)."""
    c = coords.long()
    dense = feats.new_zeros(BATCH, *shape, feats.shape[1])
    dense = dense.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def read(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def compare(out, ref, feats, feats_ref, w_sparse, w_dense, transposed, seed):
    g = torch.Generator().manual_seed(seed + 1)
    r = torch.randn(out.shape, generator=g)
    (out * r).sum().backward()
    (ref * r).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats.grad, feats_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        w_sparse.grad, dense_to_sparse_weight(w_dense.grad, transposed=transposed), rtol=1e-4, atol=1e-5
    )


def leaf(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).requires_grad_(True)
