"""Read one scene folder (``DATA/<split>/<scene>/*.npy``) into a sample dict.

The folder layout is Pointcept's preprocessed ScanNet layout, so folders written by either
pointseg or Pointcept load unchanged. Which label file a scene's ``segment`` comes from is the
dataset's (``DatasetSpec.label_file``: ``segment200.npy`` for ScanNet200, ``segment20.npy`` for
ScanNet v2's 20 classes); the other label files are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pointseg.datasets import DATASETS, DatasetSpec, default_spec
from pointseg.utils.io import atomic_path, load_npy

# Label files a scene folder may hold, one per dataset (Pointcept writes segment200 and segment20).
LABEL_FILE_NAMES = tuple(dict.fromkeys(spec.label_file for spec in DATASETS.values()))
# file name → (sample key, dtype it is converted to, required columns or None for (N,)); every
# label file is a "segment", and a scene is loaded with the one of its dataset.
SCENE_FILES = {
    "coord.npy": ("coord", np.float32, 3),
    "color.npy": ("color", np.float32, 3),
    "normal.npy": ("normal", np.float32, 3),
    **{name: ("segment", np.int64, None) for name in LABEL_FILE_NAMES},
    "instance.npy": ("instance", np.int64, None),
}
INPUT_SCENE_FILES = {name: entry for name, entry in SCENE_FILES.items() if entry[0] != "segment"}
COORD_FILE = "coord.npy"
INSTANCE_SCENE_FILE = "instance.npy"
SEGMENT_FILE = "segment200.npy"  # ScanNet200's; other datasets: DatasetSpec.label_file
# Files every scene folder holds, and those only labelled (train / val) scenes add (ScanNet200).
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


def is_finished(folder: str | os.PathLike, labelled: bool, label_files: tuple[str, ...] = LABEL_FILES) -> bool:
    """Whether a scene folder holds every file of its split (written by pointseg or Pointcept);
    ``label_files``: those a labelled scene must hold (default ScanNet200's and instances)."""
    names = INPUT_FILES + (tuple(label_files) if labelled else ())
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


def load_scene(folder: str | os.PathLike, spec: DatasetSpec | None = None) -> dict:
    """Load a scene folder as ``coord`` float32 (N,3), ``color`` float32 0..255 (N,3),
    ``normal`` float32 (N,3), ``segment`` int64 (N,) with −1 ignore (absent for test scenes),
    ``instance`` int64 (N,) if present, and ``name`` (the folder name).

    ``segment`` comes from the label file of ``spec`` (default ScanNet200), as class indices of
    ``spec``: a class subset's labels are remapped here (classes it does not keep → −1).
    Labels may be stored in any integer dtype. Raises ValueError naming the file for a missing
    ``coord.npy``, a shape mismatch, non-finite coordinates, non-integer labels or labels
    outside −1..K−1 of the file.
    """
    spec = default_spec() if spec is None else spec
    folder = Path(folder)
    coord_path = folder / "coord.npy"
    if not coord_path.is_file():
        raise ValueError(f"{coord_path}: missing (not a scene folder?)")
    data: dict = {"name": folder.name}
    n = None
    files = {**INPUT_SCENE_FILES, spec.label_file: ("segment", np.int64, None)}
    for file_name, (key, dtype, columns) in files.items():
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
        k, ignore = spec.file_classes, spec.ignore_index
        if low < ignore or high >= k:
            raise ValueError(
                f"{folder / spec.label_file}: labels must be class indices 0..{k - 1} "
                f"or {ignore} (ignore), found range {low}..{high}"
            )
        data["segment"] = spec.to_classes(data["segment"])
    return data
