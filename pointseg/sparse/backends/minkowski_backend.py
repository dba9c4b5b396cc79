"""MinkowskiEngine 0.5 backend (optional; ``make minkowski`` builds and installs ME 0.5.4).

Written against ME's functional API: ``CoordinateManager.insert_and_map``, ``KernelGenerator``,
``MinkowskiConvolutionFunction`` / ``MinkowskiConvolutionTransposeFunction``, whose ``apply`` takes
(features, kernel, kernel generator, convolution mode, in key, out key, manager) as in ME's own
``MinkowskiConvolutionBase.forward``; ``tests/test_minkowski.py`` checks the calls against ME's
modules. Conventions bridged here:

* ME coordinates are in input-voxel units (multiples of the tensor stride); ours are in units of
  the tensor's own grid, so coordinates are multiplied / divided by the stride at the boundary.
* ME's kernel is ``(K³, C_in, C_out)`` like ours, but its offset iterator advances the x axis
  fastest (``kernel_region.hpp``), ours z fastest: the conversion swaps the x and z kernel axes.
* ME imports its modules as top-level names (its ``__init__`` puts its folder on ``sys.path``);
  importing ``MinkowskiEngine.MinkowskiConvolution`` would load a second copy and replace the
  ``ME.MinkowskiConvolution`` class with that module, so the functions are taken from ``ME``.
* ``insert_and_map`` may store the input rows in its own order (``unique_map``); features at
  stride 1 are permuted in and out of that order, coarser levels adopt ME's order directly.
"""

from __future__ import annotations

import MinkowskiEngine as ME
import torch
from MinkowskiEngineBackend._C import ConvolutionMode
from torch import Tensor

from ..tensor import SparseTensor

NAME = "minkowski"
# How ME's CUDA kernels split the GEMM; DEFAULT lets ME choose, as its own modules do.
_MODE = ConvolutionMode.DEFAULT


def to_minkowski_weight(weight: Tensor, kernel_size: int) -> Tensor:
    """Our z-fastest ``(K³, C_in, C_out)`` → ME's x-fastest ``(K³, C_in, C_out)``."""
    k = kernel_size
    w = weight.reshape(k, k, k, weight.shape[1], weight.shape[2])
    return w.permute(2, 1, 0, 3, 4).reshape_as(weight).contiguous()


class MinkowskiBackend:
    name = NAME

    @staticmethod
    def _level(x: SparseTensor):
        """(manager, key at x.stride, (perm into ME order, inverse) or None)."""
        mkey = (NAME, "manager")
        if mkey not in x.cache:
            map_type = ME.CoordinateMapType.CUDA if x.feats.is_cuda else ME.CoordinateMapType.CPU
            x.cache[mkey] = ME.CoordinateManager(D=3, coordinate_map_type=map_type)
        manager = x.cache[mkey]
        key = (NAME, "key", x.stride)
        if key not in x.cache:
            coords = x.coords.clone()
            coords[:, 1:] *= x.stride
            map_key, (unique_map, inverse_map) = manager.insert_and_map(coords, [x.stride] * 3)
            n = x.coords.shape[0]
            # compared where the map is (no copy of it to the host)
            identity = unique_map.shape[0] == n and torch.equal(
                unique_map, torch.arange(n, dtype=unique_map.dtype, device=unique_map.device)
            )
            perm = None if identity else (unique_map.long(), inverse_map.long())
            x.cache[key] = (map_key, perm)
        map_key, perm = x.cache[key]
        return manager, map_key, perm

    @staticmethod
    def _kernel(kernel_size: int, stride: int):
        return ME.KernelGenerator(kernel_size=kernel_size, stride=stride, dilation=1, dimension=3)

    def subm_conv(self, x: SparseTensor, weight: Tensor, kernel_size: int) -> SparseTensor:
        manager, key, perm = self._level(x)
        feats = x.feats if perm is None else x.feats[perm[0]]
        out = ME.MinkowskiConvolutionFunction.apply(
            feats.contiguous(), to_minkowski_weight(weight, kernel_size),
            self._kernel(kernel_size, 1), _MODE, key, key, manager,
        )
        return x.replace_feats(out if perm is None else out[perm[1]])

    def down_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        manager, key, perm = self._level(x)
        feats = x.feats if perm is None else x.feats[perm[0]]
        out_key = ME.CoordinateMapKey(4)
        out = ME.MinkowskiConvolutionFunction.apply(
            feats.contiguous(), to_minkowski_weight(weight, 2), self._kernel(2, 2), _MODE,
            key, out_key, manager,
        )
        coarse = x.stride * 2
        coords = manager.get_coordinates(out_key).to(x.coords.device)
        coords[:, 1:] = torch.div(coords[:, 1:], coarse, rounding_mode="floor")
        coords = coords.to(torch.int32).contiguous()
        x.cache[(NAME, "key", coarse)] = (out_key, None)
        x.cache[("coords", coarse)] = coords
        return SparseTensor(out, coords, coarse, x.cache, validate=False)

    def up_conv(self, x: SparseTensor, weight: Tensor) -> SparseTensor:
        fine = x.stride // 2
        if (NAME, "key", fine) not in x.cache:
            raise RuntimeError(
                f"up_conv: no stride-{fine} encoder map in the cache; an up conv must follow the "
                "down conv that produced its input"
            )
        manager, key, _ = self._level(x)
        fine_key, perm = x.cache[(NAME, "key", fine)]
        out = ME.MinkowskiConvolutionTransposeFunction.apply(
            x.feats.contiguous(), to_minkowski_weight(weight, 2), self._kernel(2, 2), _MODE,
            key, fine_key, manager,
        )
        if perm is not None:
            out = out[perm[1]]
        return SparseTensor(out, x.cache[("coords", fine)], fine, x.cache, validate=False)
