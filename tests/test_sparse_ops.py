"""Each sparse op equals its dense PyTorch oracle, for outputs and gradients, on every backend present."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sparse_oracle import C_IN, C_OUT, GRID, compare, leaf, random_sites, read, to_dense

from pointseg.sparse import (
    BACKENDS,
    DownConv3d,
    SparseTensor,
    SubMConv3d,
    UpConv3d,
    dense_to_sparse_weight,
    get_backend,
    is_available,
    resolve_backend_name,
    sparse_to_dense_weight,
)


def _backends() -> list:
    return [
        pytest.param(name, marks=pytest.mark.skipif(not is_available(name), reason=f"{name} not installed"))
        for name in BACKENDS
    ]


def test_weight_layout_round_trip():
    w = torch.randn(C_OUT, C_IN, 3, 3, 3)
    assert torch.equal(sparse_to_dense_weight(dense_to_sparse_weight(w), 3), w)
    wt = torch.randn(C_IN, C_OUT, 2, 2, 2)
    s = dense_to_sparse_weight(wt, transposed=True)
    assert s.shape == (8, C_IN, C_OUT)
    # offset index (a*2 + b)*2 + c is the dense kernel position [a, b, c]
    assert torch.equal(s[(1 * 2 + 0) * 2 + 1], wt[:, :, 1, 0, 1])
    assert torch.equal(sparse_to_dense_weight(s, 2, transposed=True), wt)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_subm_conv_matches_dense(backend, kernel_size):
    coords = random_sites(0)
    feats = leaf((coords.shape[0], C_IN), 1)
    conv = SubMConv3d(C_IN, C_OUT, kernel_size, backend=backend)
    out = conv(SparseTensor(feats, coords))

    feats_ref = feats.detach().clone().requires_grad_(True)
    w_dense = sparse_to_dense_weight(conv.weight.detach(), kernel_size).requires_grad_(True)
    dense = F.conv3d(to_dense(feats_ref, coords, GRID), w_dense, padding=kernel_size // 2)
    ref = read(dense, coords)
    assert out.coords is coords or torch.equal(out.coords, coords)
    compare(out.feats, ref, feats, feats_ref, conv.weight, w_dense, False, 2)


def _down(backend, seed=0):
    coords = random_sites(seed)
    feats = leaf((coords.shape[0], C_IN), 3)
    conv = DownConv3d(C_IN, C_OUT, backend=backend)
    x = SparseTensor(feats, coords)
    return x, conv, conv(x)


@pytest.mark.parametrize("backend", _backends())
def test_down_conv_matches_dense(backend):
    x, conv, out = _down(backend)
    expected_sites = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], 1), dim=0)
    assert out.stride == 2
    assert torch.equal(torch.unique(out.coords, dim=0), expected_sites)
    assert out.coords.shape[0] == expected_sites.shape[0]

    feats_ref = x.feats.detach().clone().requires_grad_(True)
    w_dense = sparse_to_dense_weight(conv.weight.detach(), 2).requires_grad_(True)
    dense = F.conv3d(to_dense(feats_ref, x.coords, GRID), w_dense, stride=2)
    ref = read(dense, out.coords)
    compare(out.feats, ref, x.feats, feats_ref, conv.weight, w_dense, False, 4)


@pytest.mark.parametrize("backend", _backends())
def test_up_conv_matches_dense_and_restores_encoder_sites(backend):
    x, _, coarse = _down(backend, seed=5)
    feats_c = leaf((coarse.coords.shape[0], C_IN), 6)
    up = UpConv3d(C_IN, C_OUT, backend=backend)
    out = up(coarse.replace_feats(feats_c))
    assert out.stride == 1
    assert torch.equal(out.coords, x.coords)

    feats_ref = feats_c.detach().clone().requires_grad_(True)
    w_dense = sparse_to_dense_weight(up.weight.detach(), 2, transposed=True).requires_grad_(True)
    coarse_shape = tuple(s // 2 for s in GRID)
    dense = F.conv_transpose3d(to_dense(feats_ref, coarse.coords, coarse_shape), w_dense, stride=2)
    ref = read(dense, x.coords)
    compare(out.feats, ref, feats_c, feats_ref, up.weight, w_dense, True, 7)


@pytest.mark.parametrize("backend", _backends())
def test_kernel_map_built_once_per_stride(backend):
    coords = random_sites(8)
    x = SparseTensor(torch.randn(coords.shape[0], C_IN), coords)
    a, b = SubMConv3d(C_IN, C_IN, backend=backend), SubMConv3d(C_IN, C_IN, backend=backend)
    y = a(x)
    n_entries = len(x.cache)
    b(y)
    assert len(x.cache) == n_entries  # the second layer found the first one's map


def test_auto_backend_chooses_by_device():
    # CPU tensors: the torch backend (measured fastest there); CUDA tensors: spconv first.
    assert get_backend("auto").name == "torch"
    assert get_backend("auto", "cpu").name == "torch"
    expected_cuda = next(b for b in ("spconv", "minkowski", "torch") if is_available(b))
    assert resolve_backend_name("auto", "cuda") == expected_cuda
    assert resolve_backend_name("torch", "cuda") == "torch"  # a named backend is kept on any device
    with pytest.raises(KeyError, match="unknown sparse backend 'cuda'"):
        get_backend("cuda")


def test_auto_layer_runs_the_backend_of_its_input_device():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.int32)
    layer = SubMConv3d(2, 3, backend="auto")
    assert layer.backend == "auto"  # stays device-neutral: chosen per call
    explicit = SubMConv3d(2, 3, backend="torch")
    explicit.weight.data.copy_(layer.weight.data)
    x = torch.randn(3, 2)
    assert torch.equal(layer(SparseTensor(x, coords)).feats, explicit(SparseTensor(x, coords)).feats)


# --- bad input ----------------------------------------------------------------------------------


def _good(m=4):
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [1, 3, 3, 3]], dtype=torch.int32)[:m]
    return torch.randn(coords.shape[0], 3), coords


def test_no_points():
    with pytest.raises(ValueError, match="no points"):
        SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32))


def test_duplicate_coordinates():
    feats, coords = _good()
    coords[2] = coords[0]
    with pytest.raises(ValueError, match="1 duplicate coordinates"):
        SparseTensor(feats, coords)


def test_packed_keys_sort_like_the_coordinate_tuples_over_many_scenes():
    """Keys of 4096 scenes at the grid's corners: all distinct and in lexicographic (b, x, y, z)
    order, the order Python gives the tuples."""
    from pointseg.sparse.tensor import MAX_BATCH_INDEX, MAX_GRID_INDEX, pack_coords

    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([0, 1, MAX_GRID_INDEX - 1, MAX_GRID_INDEX])
    batch = torch.tensor([0, 1, 2, 3, 5, 8, 1000, MAX_BATCH_INDEX])
    grid = torch.cartesian_prod(batch, corners, corners, corners)
    rand = torch.cat([torch.randint(0, MAX_BATCH_INDEX + 1, (500, 1), generator=g),
                      torch.randint(0, MAX_GRID_INDEX + 1, (500, 3), generator=g)], dim=1)
    coords = torch.cat([grid, rand]).to(torch.int32)
    keys = pack_coords(coords)
    assert bool((keys >= 0).all())
    tuples = [tuple(c) for c in coords.tolist()]
    assert len(set(keys.tolist())) == len(set(tuples))
    assert [tuples[i] for i in torch.argsort(keys).tolist()] == sorted(tuples)


def test_a_batch_of_many_scenes_on_the_same_sites_has_no_duplicates():
    coords = torch.tensor([[b, 1, 2, 3] for b in range(9)], dtype=torch.int32)
    assert SparseTensor(torch.randn(9, 3), coords).coords.shape == (9, 4)


def test_coordinates_beyond_the_key_range():
    from pointseg.sparse.tensor import MAX_BATCH_INDEX, MAX_GRID_INDEX

    feats, coords = _good()
    coords[1, 3] = MAX_GRID_INDEX + 1
    with pytest.raises(ValueError, match="grid indices above"):
        SparseTensor(feats, coords)
    feats, coords = _good()
    coords[1, 0] = MAX_BATCH_INDEX + 1
    with pytest.raises(ValueError, match="batch indices above"):
        SparseTensor(feats, coords)


def test_non_integer_coordinates():
    feats, coords = _good()
    with pytest.raises(TypeError, match="integer voxel indices"):
        SparseTensor(feats, coords.float() + 0.5)


def test_negative_coordinates():
    feats, coords = _good()
    coords[1, 2] = -1
    with pytest.raises(ValueError, match="negative coordinates"):
        SparseTensor(feats, coords)


def test_wrong_feature_dtype():
    feats, coords = _good()
    with pytest.raises(TypeError, match="float32"):
        SparseTensor(feats.double(), coords)


def test_wrong_shapes():
    feats, coords = _good()
    with pytest.raises(ValueError, match=r"shape \(M, 4\)"):
        SparseTensor(feats, coords[:, :3])
    with pytest.raises(ValueError, match="3 feature rows for 4 coordinates"):
        SparseTensor(feats[:3], coords)


def test_wrong_channel_count():
    feats, coords = _good()
    with pytest.raises(ValueError, match="input has 3 feature channels, layer expects 6"):
        SubMConv3d(6, 8, backend="torch")(SparseTensor(feats, coords))


def test_int64_coordinates_are_accepted_as_contiguous_int32():
    feats, coords = _good()
    x = SparseTensor(feats, coords.long())
    assert x.coords.dtype == torch.int32 and x.coords.is_contiguous()
