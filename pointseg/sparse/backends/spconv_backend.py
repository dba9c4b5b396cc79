"""spconv 2.x backend (the CUDA wheel, e.g. ``spconv-cu126``; it also runs CPU tensors).

Facts this adapter relies on (spconv 2.3.8):

* CPU tensors give correct forward and backward only with ``ConvAlgo.Native``; on GPU the
  default implicit GEMM is used. Layers sharing an ``indice_key`` must use one algorithm, so
  the algorithm is chosen per device and all keys of one forward use it.
* Indices must be contiguous int32 (``SparseTensor`` guarantees it) or results are silently wrong.
* spconv 2.x keeps every conv weight as KRSC ``(C_out, kx, ky, kz, C_in)`` with the kernel
  axes in the order of the index columns; ours is ``(K³, C_in, C_out)`` flattened in the same
  (x, y, z) order, so the conversion is one permute at the call boundary (autograd carries the
  gradient back to our layout).

The indice dict (spconv's kernel maps, keyed ``subm{stride}k{K}`` / ``down{stride}``) lives in
``SparseTensor.cache`` so every layer of a forward shares it; the transposed conv reuses the
encoder's ``down{stride}`` pairs, which also gives back the encoder's coordinates exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import spconv.pytorch as spconv
import torch
from spconv.core import ConvAlgo
from torch import Tensor

from ..tensor import SparseTensor

NAME = "spconv"
_DICT = (NAME, "indice_dict")


def to_spconv_weight(weight: Tensor, kernel_size: int) -> Tensor:
    """``(K³, C_in, C_out)`` → spconv's KRSC ``(C_out, K, K, K, C_in)``."""
    k = kernel_size
    return weight.permute(2, 0, 1).reshape(weight.shape[2], k, k, k, weight.shape[1]).contiguous()


class _DropFxTracingNotice(logging.Filter):
    """spconv's SparseConvTensor metaclass asks torch.fx whether it is tracing; torch answers, once
    per process, with a notice about its own API that says nothing about our code."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is_fx_tracing will return true" not in record.getMessage()


class SpconvBackend:
    name = NAME

    def __init__(self) -> None:
        fx_log = logging.getLogger("torch.fx._symbolic_trace")
        if not any(isinstance(f, _DropFxTracingNotice) for f in fx_log.filters):
            fx_log.addFilter(_DropFxTracingNotice())
        # Stateless executors (their own 1-element weights are never used): spconv's modules
        # hold the pair-building and reuse logic, we pass our weight into ``_conv_forward``.
        self._executors: dict[tuple, Any] = {}

    def _executor(self, kind: str, stride: int, k: int, c_in: int, c_out: int, algo: ConvAlgo) -> Any:
        key = (kind, stride, k, c_in, c_out, algo)
        if key not in self._executors:
            if kind == "subm":
                mod = spconv.SubMConv3d(c_in, c_out, k, bias=False, indice_key=f"subm{stride}k{k}", algo=algo)
            elif kind == "down":
                mod = spconv.SparseConv3d(c_in, c_out, 2, stride=2, bias=False, indice_key=f"down{stride}", algo=algo)
            else:
                mod = spconv.SparseInverseConv3d(c_in, c_out, 2, indice_key=f"down{stride}", bias=False, algo=algo)
            mod.weight.requires_grad_(False)
            self._executors[key] = mod
        return self._executors[key]

    @staticmethod
    def _algo(x: SparseTensor) -> ConvAlgo:
        return ConvAlgo.Native if x.feats.device.type == "cpu" else ConvAlgo.MaskImplicitGemm

    @staticmethod
    def _geometry(x: SparseTensor) -> tuple[list[int], int]:
        """Spatial shape at ``x.stride`` and batch size, fixed once per forward at stride 1."""
        key = (NAME, "geometry")
        if key not in x.cache:
            base = x.cache.get(("coords", 1), x.coords)
            extent = base[:, 1:].max(dim=0).values.to(torch.int64) + 1
            # A multiple of 16 keeps shape(stride s) = shape(1) / s exact through four downsamplings.
            shape = ((extent + 15) // 16 * 16).tolist()
            x.cache[key] = (shape, int(base[:, 0].max().item()) + 1)
        shape, batch = x.cache[key]
        return [s // x.stride for s in shape], batch

    def _run(self, mod: Any, x: SparseTensor, weight: Tensor) -> Any:
        shape, batch = self._geometry(x)
        indice_dict = x.cache.setdefault(_DICT, {})
        spt = spconv.SparseConvTensor(x.feats.contiguous(), x.coords, shape, batch, indice_dict=indice_dict)
        out = mod._conv_forward(torch.is_grad_enabled(), spt, to_spconv_weight(weight, mod.kernel_size[0]), None)
        x.cache[_DICT] = out.indice_dict
        return out

    def subm_conv(self, x: SparseTensor, weight: Tensor, kernel_size: int) -> SparseTensor:
        mod = self._executor("subm", x.stride, kernel_size, weight.shape[1], weight.shape[2], self._algo(x))
        return x.replace_feats(self._run(mod, x, weight).features)

    def down_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        mod = self._executor("down", x.stride, 2, weight.shape[1], weight.shape[2], self._algo(x))
        if f"down{x.stride}" in x.cache.get(_DICT, {}):
            raise RuntimeError(f"down_conv: stride {x.stride} was already downsampled in this forward")
        out = self._run(mod, x, weight)
        coords = out.indices.contiguous()
        x.cache[("coords", x.stride * 2)] = coords
        return SparseTensor(out.features, coords, x.stride * 2, x.cache, validate=False)

    def up_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        fine = x.stride // 2
        if f"down{fine}" not in x.cache.get(_DICT, {}):
            raise RuntimeError(
                f"up_conv: no stride-{fine} encoder map in the cache; an up conv must follow the "
                "down conv that produced its input"
            )
        mod = self._executor("up", fine, 2, weight.shape[1], weight.shape[2], self._algo(x))
        out = self._run(mod, x, weight)
        return SparseTensor(out.features, x.cache[("coords", fine)], fine, x.cache, validate=False)
