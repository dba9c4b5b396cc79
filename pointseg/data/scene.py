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
from pointseg.utils.io import atomic_path, load_npy

# file name → (sample key, dtype it is converted to, required columns or None for (N,))
SCENE_FILES = {
    "coord.npy": ("coord", np.float32, 3),
    "color.npy": ("color", np.float32, 3),
    "normal.npy": ("normal", np.float32, 3),
    "segment200.npy": ("segment", np.int64, None),
    "instance.npy": ("instance", np.int64, None),
}
COORD_FILE = "coord.npy"
SEGMENT_FILE = "segment200.npy"
# Files every scene folder holds, and those only labelled (train / val) scenes add.
INPUT_FILES = ("coord.npy", "color.npy", "normal.npy")
LABEL_FILES = ("segment200.npy", "instance.npy")


def check_folder_name(name: str, what: str = "scene", example: str = "scene0000_00") -> str:
    """``name`` if it is one folder name (``scene0000_00``, ``val``); a path such as
    ``../train/x``, ``/abs`` or ``a/b`` would read or write outside the folder it is joined to."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r}: not a {what} name (a folder name such as {example}, not a path)")
    return name


def scene_dir(root: str | os.PathLike, split: str, scene: str) -> Path:
    """``DATA/<split>/<scene>``; ``split`` and ``scene`` must be folder names, not paths."""
    return Path(root) / check_folder_name(split, "split", "val") / check_folder_name(scene)


def is_finished(folder: str | os.PathLike, labelled: bool) -> bool:
    """Whether a scene folder holds every file of its split (written by pointseg or Pointcept)."""
    names = INPUT_FILES + (LABEL_FILES if labelled else ())
    return all((Path(folder) / n).is_file() for n in names)


def num_points(folder: str | os.PathLike) -> int:
    """N of a scene, from the ``coord.npy`` header (memory-mapped: nothing is read)."""
    path = Path(folder) / COORD_FILE
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError):
        return int(load_npy(path).shape[0])  # raises naming the file


def write_scene_dir(folder: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write a scene folder atomically (replacing an existing one): ``arrays`` maps file names of
    ``SCENE_FILES`` to arrays, stored as they are (the loader converts dtypes)."""
    unknown = sorted(set(arrays) - set(SCENE_FILES))
    if unknown:
        raise ValueError(f"write_scene_dir: {unknown} are not scene files ({sorted(SCENE_FILES)})")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / name, np.ascontiguousarray(array), allow_pickle=False)


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
