"""Pure PyTorch sparse convolution: sort-based coordinate hashing, any device.

Kernel maps are built once per stride with one ``torch.sort`` and one batched
``torch.searchsorted`` over all kernel offsets, then cached in ``SparseTensor.cache``.

Submanifold conv: the centre offset is one dense GEMM over all voxels; every other offset runs
gather → matmul → ``index_add_`` over its *valid* (input, output) pairs only. Indoor surfaces
fill ~10 of the 27 neighbours, so this does ~1/3 of the work of gathering a full
``(M, 27·C)`` im2col matrix (measured 2-3× faster than that on CPU). A custom autograd Function
keeps only the features and the map for backward (no gathered copies are stored) and reuses the
map there: grad wrt features = the same loop on the output gradient with ``Wᵀ`` and in/out
swapped; grad wrt ``W[k]`` = ``x[in_k]ᵀ @ grad[out_k]``.

Down conv (k=2, s=2): every input voxel is one child slot ``parent·8 + offset``; the children
are scattered into an ``(M_out, 8·C_in)`` matrix and multiplied once. Up conv: one GEMM gives
every parent's 8 children, the existing ones are picked with the cached down map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensor import SparseTensor, offset_key, pack_coords

NAME = "torch"


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets in the pinned order: index ``(a·K + b)·K + c`` ↔ ``(a, b, c) − K//2`` (x, y, z)."""
    r = range(-(kernel_size // 2), kernel_size // 2 + 1)
    return [(dx, dy, dz) for dx in r for dy in r for dz in r]


def subm_neighbours(coords: Tensor, kernel_size: int) -> Tensor:
    """``(M, K³)`` int64 row of the neighbour at each offset, ``M`` (a zero pad row) when empty."""
    m = coords.shape[0]
    keys = pack_coords(coords)
    sorted_keys, perm = torch.sort(keys)
    deltas = torch.tensor(
        [offset_key(*o) for o in kernel_offsets(kernel_size)], dtype=torch.int64, device=keys.device
    )
    query = keys[:, None] + deltas[None, :]
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=m - 1)
    found = sorted_keys[pos] == query
    pad = torch.full_like(pos, m)
    return torch.where(found, perm[pos], pad)


def subm_pairs(coords: Tensor, kernel_size: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per non-centre offset ``k``: (input rows, output rows) with ``in = out + offset_k``."""
    m = coords.shape[0]
    nbr = subm_neighbours(coords, kernel_size)
    valid_t = (nbr < m).t()
    counts = valid_t.sum(dim=1).tolist()
    outs = valid_t.nonzero()[:, 1]  # grouped by offset, ascending output row within a group
    ins = nbr.t()[valid_t]
    centre = kernel_size**3 // 2
    in_list, out_list = list(ins.split(counts)), list(outs.split(counts))
    del in_list[centre], out_list[centre]  # the centre is the identity pairing, done as one GEMM
    return in_list, out_list


def _subm_apply(feats: Tensor, weight: Tensor, ins: list[Tensor], outs: list[Tensor]) -> Tensor:
    """``out[o] = Σ_k x[i] @ weight[k]`` over the pairs (i, o) of each offset k."""
    centre = weight.shape[0] // 2
    out = feats @ weight[centre]
    offsets = [k for k in range(weight.shape[0]) if k != centre]
    for k, i, o in zip(offsets, ins, outs):
        out.index_add_(0, o, feats.index_select(0, i) @ weight[k])
    return out


class _SubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, ins: list[Tensor], outs: list[Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(feats, weight)
        ctx.pairs = (ins, outs)
        return _subm_apply(feats, weight, ins, outs)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        feats, weight = ctx.saved_tensors
        ins, outs = ctx.pairs
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            # Transposed map: pairs (o → i) with Wᵀ.
            grad_feats = _subm_apply(grad_out, weight.transpose(1, 2), outs, ins)
        if ctx.needs_input_grad[1]:
            centre = weight.shape[0] // 2
            grad_weight = torch.empty_like(weight)
            grad_weight[centre] = feats.t() @ grad_out
            offsets = [k for k in range(weight.shape[0]) if k != centre]
            for k, i, o in zip(offsets, ins, outs):
                grad_weight[k] = feats.index_select(0, i).t() @ grad_out.index_select(0, o)
        return grad_feats, grad_weight, None, None


def _down_map(x: SparseTensor) -> tuple[Tensor, int]:
    """Slot ``parent·8 + child_offset`` of every input voxel and the number of parents."""
    key = (NAME, "down", x.stride)
    if key not in x.cache:
        c = x.coords.to(torch.int64)
        parent_coords = torch.cat([c[:, :1], c[:, 1:] >> 1], dim=1)
        uniq, parent = torch.unique(pack_coords(parent_coords), return_inverse=True)
        child = ((c[:, 1] & 1) << 2) | ((c[:, 2] & 1) << 1) | (c[:, 3] & 1)
        out_coords = torch.empty(uniq.shape[0], 4, dtype=torch.int64, device=c.device)
        out_coords.scatter_(0, parent[:, None].expand(-1, 4), parent_coords)
        x.cache[key] = (parent * 8 + child, uniq.shape[0])
        x.cache[("coords", x.stride * 2)] = out_coords.to(torch.int32).contiguous()
    return x.cache[key]


class TorchBackend:
    """Executes the three MinkUNet convolutions with the module's ``(K³, C_in, C_out)`` weight."""

    name = NAME

    def subm_conv(self, x: SparseTensor, weight: Tensor, kernel_size: int) -> SparseTensor:
        key = (NAME, "subm", x.stride, kernel_size)
        if key not in x.cache:
            x.cache[key] = subm_pairs(x.coords, kernel_size)
        ins, outs = x.cache[key]
        out = _SubMConv.apply(x.feats.contiguous(), weight, ins, outs)
        return x.replace_feats(out)

    def down_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        slot, n_out = _down_map(x)
        c_in = x.feats.shape[1]
        cols = x.feats.new_zeros(n_out * 8, c_in).index_copy(0, slot, x.feats)
        out = cols.view(n_out, 8 * c_in) @ weight.reshape(8 * c_in, -1)
        coords = x.cache[("coords", x.stride * 2)]
        return SparseTensor(out, coords, x.stride * 2, x.cache, validate=False)

    def up_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        fine = x.stride // 2
        key = (NAME, "down", fine)
        if key not in x.cache:
            raise RuntimeError(
                f"up_conv: no stride-{fine} encoder map in the cache; an up conv must follow the "
                "down conv that produced its input"
            )
        slot, n_coarse = x.cache[key]
        if n_coarse != x.feats.shape[0]:
            raise RuntimeError(f"up_conv: {x.feats.shape[0]} voxels, encoder map has {n_coarse}")
        c_out = weight.shape[2]
        # (M_c, C_in) @ (C_in, 8·C_out): every child's output of every parent, then pick the
        # children that exist at the finer stride.
        all_children = x.feats @ weight.permute(1, 0, 2).reshape(weight.shape[1], 8 * c_out)
        out = all_children.view(-1, c_out).index_select(0, slot)
        coords = x.cache[("coords", fine)]
        return SparseTensor(out, coords, fine, x.cache, validate=False)
