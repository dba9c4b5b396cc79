"""A scan's axes and units brought to ScanNet's: z up, metres.

Many phone and game-engine exports are y-up, and scanners write millimetres or centimetres; a
model trained on ScanNet sees walls as vertical along z and voxels of ``data.voxel_size`` metres,
so both are converted before prediction (outputs keep the file's own frame).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

log = logging.getLogger(__name__)

UP_AXES = ("z", "y")
# Units a scan may be in, as their count per metre: dividing by it is exact for coordinates that
# are exact in metres (multiplying by 0.001 is not, 0.001 having no exact binary form).
UNITS_PER_METRE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
# Extents (largest side of the bounding box, metres) that a room or building scan has; outside
# PLAUSIBLE a warning names the units that would bring the scan within TYPICAL.
PLAUSIBLE_EXTENT = (0.25, 200.0)
TYPICAL_EXTENT = (1.0, 50.0)


def up_to_z(points: np.ndarray, up: str) -> np.ndarray:
    """Rows of ``points`` (coordinates or normals) turned so that ``up`` becomes +z.

    y-up → z-up is the rotation by +90° about x, ``(x, y, z) → (x, -z, y)``: a proper rotation, so
    the scan is not mirrored, and exact (it only moves and negates columns).
    """
    if up not in UP_AXES:
        raise ValueError(f"up axis must be one of {UP_AXES}, got {up!r}")
    if up == "z":
        return points
    return np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1)


def to_scannet_frame(coord: np.ndarray, up: str = "z", units: str = "m") -> np.ndarray:
    """float32 (N, 3) coordinates in metres, z up, from a scan's own frame."""
    if units not in UNITS_PER_METRE:
        raise ValueError(f"units must be one of {list(UNITS_PER_METRE)}, got {units!r}")
    metres = np.asarray(coord, dtype=np.float64) / UNITS_PER_METRE[units]
    return np.ascontiguousarray(up_to_z(metres, up), dtype=np.float32)


def units_hint(coord_m: np.ndarray, units: str) -> str | None:
    """A warning when the scan's extent in metres (read as ``units``) is implausible for a room or
    building and other units would make it typical; None when it looks right."""
    if len(coord_m) == 0:
        return None
    extent = float(np.max(coord_m.max(axis=0) - coord_m.min(axis=0)))
    if PLAUSIBLE_EXTENT[0] <= extent <= PLAUSIBLE_EXTENT[1]:
        return None
    raw = extent * UNITS_PER_METRE[units]  # the extent in the file's own numbers
    better = [u for u, per in UNITS_PER_METRE.items()
              if u != units and TYPICAL_EXTENT[0] <= raw / per <= TYPICAL_EXTENT[1]]
    if not better:
        return f"the scan is {extent:.3g} m across in --units {units}, unusual for a room or building"
    centre = math.sqrt(TYPICAL_EXTENT[0] * TYPICAL_EXTENT[1])  # the most typical: closest to it, in ratio
    alt = min(better, key=lambda u: abs(math.log(raw / UNITS_PER_METRE[u] / centre)))
    return (f"the scan is {extent:.3g} m across in --units {units}; in --units {alt} it would be "
            f"{raw / UNITS_PER_METRE[alt]:.3g} m: check --units")


def warn_units(path: str | os.PathLike, coord_m: np.ndarray, units: str) -> str | None:
    """Log :func:`units_hint` for the scan at ``path``; returns it."""
    hint = units_hint(coord_m, units)
    if hint:
        log.warning("%s: %s", path, hint)
    return hint
