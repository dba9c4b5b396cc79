"""The torch backend's kernel maps and chunked convolution, against plain references.

``tests/test_sparse_ops.py`` checks every backend against dense convolution on small scenes,
which fit one chunk and the dense neighbour grid; these tests force the other paths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sparse_oracle import C_IN, C_OUT, GRID, compare, leaf, random_sites, read, to_dense

from pointseg.sparse import SparseTensor, SubMConv3d, sparse_to_dense_weight
from pointseg.sparse.backends import torch_backend


def brute_force_neighbours(coords: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(K³, M): row of the voxel at ``coords + offset`` (same batch), M when absent."""
    m = coords.shape[0]
    where = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = torch.full((kernel_size**3, m), m, dtype=torch.int32)
    for k, (dx, dy, dz) in enumerate(torch_backend.kernel_offsets(kernel_size)):
        for i, (b, x, y, z) in enumerate(coords.tolist()):
            out[k, i] = where.get((b, x + dx, y + dy, z + dz), m)
    return out


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("grid_lookup", [True, False])
def test_neighbours_match_brute_force_on_both_lookup_paths(kernel_size, grid_lookup, monkeypatch):
    if not grid_lookup:
        monkeypatch.setattr(torch_backend, "LOOKUP_MAX_CELLS", 0)  # binary search in sorted keys
    coords = random_sites(11)
    got = torch_backend.subm_neighbours(coords, kernel_size)
    assert got.dtype == torch.int32
    assert torch.equal(got, brute_force_neighbours(coords, kernel_size))


def test_chunks_cover_every_pair_once_in_offset_and_csr_order():
    coords = random_sites(12, density=0.5)
    m = coords.shape[0]
    nbr = brute_force_neighbours(coords, 3).long()
    centre = 13
    expected = {(int(nbr[k, o]), o, k) for k in range(27) for o in range(m) if k != centre and nbr[k, o] < m}
    chunks = torch_backend.subm_map(coords, 3, chunk_pairs=50)
    assert len(chunks) > 5
    seen = set()
    for ch in chunks:
        assert ch.row_start < ch.row_stop
        dense = ch.scatter_matrix(torch.float32).to_dense()  # (rows, pairs): a 1 at each pair's output row
        assert torch.equal(dense.sum(dim=0), torch.ones(len(ch)))
        assert torch.equal(dense.argmax(dim=0) + ch.row_start, ch.outs.long())
        for k, b, e in ch.segments:
            outs = ch.outs[b:e].long()
            assert torch.all(outs[1:] > outs[:-1])  # ascending rows inside an offset
            assert torch.all((ch.row_start <= outs) & (outs < ch.row_stop))
            seen.update((int(i), int(o), k) for i, o in zip(ch.ins[b:e].tolist(), outs.tolist()))
        assert sum(e - b for _, b, e in ch.segments) == len(ch)
    assert seen == expected
    assert sum(len(ch) for ch in chunks) == len(expected)


@pytest.mark.parametrize("grid_lookup", [True, False])
def test_many_chunks_match_dense_conv(grid_lookup, monkeypatch):
    """Output, input and weight gradients with ~40 chunks equal the dense oracle."""
    monkeypatch.setattr(torch_backend, "CHUNK_PAIRS", 64)
    if not grid_lookup:
        monkeypatch.setattr(torch_backend, "LOOKUP_MAX_CELLS", 0)
    coords = random_sites(13)
    feats = leaf((coords.shape[0], C_IN), 14)
    conv = SubMConv3d(C_IN, C_OUT, 3, backend="torch")
    x = SparseTensor(feats, coords)
    out = conv(x)
    assert len(x.cache[("torch", "subm", 1, 3)]) > 20
    feats_ref = feats.detach().clone().requires_grad_(True)
    w_dense = sparse_to_dense_weight(conv.weight.detach(), 3).requires_grad_(True)
    ref = read(F.conv3d(to_dense(feats_ref, coords, GRID), w_dense, padding=1), coords)
    compare(out.feats, ref, feats, feats_ref, conv.weight, w_dense, False, 15)


def test_outputs_do_not_share_the_work_buffers():
    coords = random_sites(16)
    x = SparseTensor(torch.randn(coords.shape[0], C_IN), coords)
    a, b = SubMConv3d(C_IN, C_IN, backend="torch"), SubMConv3d(C_IN, C_IN, backend="torch")
    y = a(x)
    kept = y.feats.clone()
    b(b(y))
    assert torch.equal(y.feats, kept)


def test_autocast_runs_in_float32():
    coords = random_sites(17)
    x = SparseTensor(torch.randn(coords.shape[0], C_IN), coords)
    conv = SubMConv3d(C_IN, C_OUT, backend="torch")
    expected = conv(x).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(SparseTensor(x.feats, coords)).feats
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
