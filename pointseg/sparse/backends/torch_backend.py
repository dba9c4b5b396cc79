"""Pure PyTorch sparse convolution: sort-based coordinate hashing, any device.

Kernel maps are built once per stride with one ``torch.sort`` and one batched
``torch.searchsorted`` over all kernel offsets, then cached in ``SparseTensor.cache``.

Execution is "gather then one GEMM" rather than the classic per-offset gather → matmul →
``index_add_`` loop: the submanifold conv gathers each voxel's K³ neighbours into an
``(M, K³·C_in)`` matrix and multiplies it once by the ``(K³·C_in, C_out)`` weight. One large
GEMM keeps both CPU cores busy, where 27 small matmuls plus 27 scatter-adds do not. Its backward
(a custom autograd Function) needs no scatter either: a submanifold neighbourhood is symmetric,
so the input gradient is the same gather applied to the output gradient with the kernel
flipped, and the gathered matrix is recomputed instead of stored (it is K³ times the features).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensor import SparseTensor, pack_coords, offset_key

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


class _SubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, nbr: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(feats, weight, nbr)
        return _gather(feats, nbr) @ weight.reshape(-1, weight.shape[2])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        feats, weight, nbr = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            # d out[o] / d x[i] = W[k]ᵀ where nbr[o, k] = i  ⇔  nbr[i, K³-1-k] = o (symmetry).
            w_flip = weight.flip(0).transpose(1, 2).reshape(-1, weight.shape[1])
            grad_feats = _gather(grad_out, nbr) @ w_flip
        if ctx.needs_input_grad[1]:
            grad_weight = (_gather(feats, nbr).t() @ grad_out).view_as(weight)
        return grad_feats, grad_weight, None


def _gather(feats: Tensor, nbr: Tensor) -> Tensor:
    """``(M, K³·C)`` neighbour features, zeros where a neighbour is missing."""
    padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])
    return padded.index_select(0, nbr.view(-1)).view(nbr.shape[0], -1)


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
            x.cache[key] = subm_neighbours(x.coords, kernel_size)
        out = _SubMConv.apply(x.feats.contiguous(), weight, x.cache[key])
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
