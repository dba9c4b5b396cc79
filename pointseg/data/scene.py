"""Read one scene folder (``DATA/<split>/<scene>/*.npy``) into a sample dict.

The folder layout is Pointcept's preprocessed ScanNet layout, so folders written by either
pointseg or Pointcept load unchanged; files this loader does not know (``segment20.npy``, ...)
are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pointseg.meta import IGNORE_INDEX, NUM_CLASSES
from pointseg.utils.io import load_npy

# file name → (sample key, dtype it is converted to, required columns or None for (N,))
SCENE_FILES = {
    "coord.npy": ("coord", np.float32, 3),
    "color.npy": ("color", np.float32, 3),
    "normal.npy": ("normal", np.float32, 3),
    "segment200.npy": ("segment", np.int64, None),
    "instance.npy": ("instance", np.int64, None),
}


def _check_shape(path: Path, array: np.ndarray, n: int, columns: int | None) -> None:
    want = (n,) if columns is None else (n, columns)
    if array.shape != want:
        raise ValueError(f"{path}: expected shape {want} to match coord.npy, got {array.shape}")


def load_scene(folder: str | os.PathLike) -> dict:
    """Load a scene folder as ``coord`` float32 (N,3), ``color`` float32 0..255 (N,3),
    ``normal`` float32 (N,3), ``segment`` int64 (N,) with −1 ignore (absent for test scenes),
    ``instance`` int64 (N,) if present, and ``name`` (the folder name).

    Labels may be stored in any integer dtype. Raises ValueError naming the file for a missing
    ``coord.npy``, a shape mismatch, non-finite coordinates, non-integer labels or labels
    outside −1..199.
    """
    folder = Path(folder)
    coord_path = folder / "coord.npy"
    if not coord_path.is_file():
        raise ValueError(f"{coord_path}: missing (not a scene folder?)")
    data: dict = {"name": folder.name}
    n = None
    for file_name, (key, dtype, columns) in SCENE_FILES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        array = load_npy(path)
        if n is None:  # coord.npy comes first in SCENE_FILES
            if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
                raise ValueError(f"{path}: expected shape (N>0, 3), got {array.shape}")
            n = array.shape[0]
        _check_shape(path, array, n, columns)
        if dtype is np.int64:
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{path}: expected an integer array, got {array.dtype}")
        elif not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{path}: expected a numeric array, got {array.dtype}")
        data[key] = array.astype(dtype, copy=False)
    if not np.isfinite(data["coord"]).all():
        raise ValueError(f"{coord_path}: coordinates contain NaN or inf")
    if "segment" in data and data["segment"].size:
        low, high = int(data["segment"].min()), int(data["segment"].max())
        if low < IGNORE_INDEX or high >= NUM_CLASSES:
            raise ValueError(
                f"{folder / 'segment200.npy'}: labels must be class indices 0..{NUM_CLASSES - 1} "
                f"or {IGNORE_INDEX} (ignore), found range {low}..{high}"
            )
    return data
