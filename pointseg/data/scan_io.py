"""Scan files outside any dataset layout: read a point cloud or mesh, write it back labelled.

Read: PLY (a point cloud, or a mesh's vertices; plyfile), NPY (N×3 ``x y z`` or N×6 ``x y z r g
b``), TXT / XYZ (the same columns as text) and, when their libraries are installed (the ``scans``
extra), PCD (open3d) and LAS / LAZ (laspy). Colours may be 0–255 integers, 16-bit integers or
0–1 floats; :func:`colors_to_255` tells them apart. Every error names the file.

Write: the input's points in their order, coordinates and dtype, with a colour and a ``label``
per point, as PLY (a mesh keeps its faces), NPY (a structured array with named fields) or TXT;
always atomically (``pointseg.utils.io.atomic_path``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointseg.utils.io import atomic_path

# The optional extra holding the readers of PCD and LAS / LAZ files.
SCANS_EXTRA = "pip install 'pointseg[scans]'"
READ_FORMATS = (".ply", ".npy", ".txt", ".xyz", ".pcd", ".las", ".laz")
WRITE_FORMATS = ("ply", "npy", "txt")
# Per-point colour property names of PLY writers, in the order they are tried.
_PLY_COLORS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_PLY_NORMALS = ("nx", "ny", "nz")


@dataclass
class Scan:
    """A scan as read: ``coord`` (N, 3) in the file's own units, axes and dtype; ``color`` float32
    0..255 (N, 3) or None; ``normal`` (N, 3) or None; ``faces`` (F, 3) int64 of a triangle mesh or
    None; ``color_encoding`` says how the colours were stored."""

    path: Path
    coord: np.ndarray
    color: np.ndarray | None = None
    normal: np.ndarray | None = None
    faces: np.ndarray | None = None
    color_encoding: str | None = None
    # PLY elements other than the vertices (a mesh's faces), written back unchanged.
    ply_elements: list = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])


def colors_to_255(raw: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """float32 (N, 3) colours on the 0..255 scale the models were trained with, and the encoding.

    Integers up to 255 are 8-bit; larger integers (LAS, 16-bit PLY) are 16-bit and divided by
    257. Floats that all lie within 0..1 are 0–1 colours, scaled by 255 and rounded to the 8-bit
    values ScanNet's colours have; other floats are taken as 0..255. Non-finite values are left
    for the caller, which drops those points.
    """
    raw = np.asarray(raw)
    finite = raw[np.isfinite(raw).all(axis=1)] if np.issubdtype(raw.dtype, np.floating) else raw
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    if low < 0:
        raise ValueError(f"{path}: colours must not be negative (minimum {low:g})")
    if np.issubdtype(raw.dtype, np.integer):
        if high <= 255:
            return raw.astype(np.float32), "8-bit"
        if high <= 65535:
            return (raw / 257.0).astype(np.float32), "16-bit"
        raise ValueError(f"{path}: colour values up to {high:g}: neither 8-bit nor 16-bit")
    if high <= 1.0:
        return np.rint(raw * 255.0).astype(np.float32), "0-1 floats"
    if high <= 255.0:
        return raw.astype(np.float32), "0-255 floats"
    raise ValueError(f"{path}: float colours up to {high:g}: neither 0-1 nor 0-255")


def _columns(array: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``x y z`` and, with six columns, ``r g b`` of a plain (N, C) array."""
    if array.ndim != 2 or array.shape[1] not in (3, 6):
        raise ValueError(f"{path}: expected {what} of 3 columns (x y z) or 6 (x y z r g b), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{path}: expected numbers, got dtype {array.dtype}")
    coord = array[:, :3]
    if not np.issubdtype(coord.dtype, np.floating):
        coord = coord.astype(np.float64)
    return np.ascontiguousarray(coord), (array[:, 3:6] if array.shape[1] == 6 else None)


def _read_ply(path: Path) -> Scan:
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for a broken file
        raise ValueError(f"{path}: cannot read PLY ({type(e).__name__}: {e})") from e
    if "vertex" not in ply:
        raise ValueError(f"{path}: PLY has no 'vertex' element")
    vertex = ply["vertex"].data
    names = vertex.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{path}: PLY vertices have no x, y, z properties (found {list(names)})")
    coord_dtype = np.result_type(*(vertex[a].dtype for a in "xyz"), np.float32)
    coord = np.empty((len(vertex), 3), dtype=coord_dtype)
    for i, a in enumerate("xyz"):
        coord[:, i] = vertex[a]
    color = normal = faces = None
    for keys in _PLY_COLORS:
        if set(keys) <= set(names):
            color = np.stack([vertex[k] for k in keys], axis=1)
            break
    if set(_PLY_NORMALS) <= set(names):
        normal = np.stack([vertex[k] for k in _PLY_NORMALS], axis=1).astype(np.float32)
    others = [el for el in ply.elements if el.name != "vertex"]
    if "face" in ply and len(ply["face"].data):
        face_data = ply["face"].data
        key = "vertex_indices" if "vertex_indices" in (face_data.dtype.names or ()) else face_data.dtype.names[0]
        try:
            faces = np.stack(face_data[key]).astype(np.int64)
        except ValueError:  # polygons of mixed sizes: no triangle normals from them
            faces = None
        if faces is not None and (faces.ndim != 2 or faces.shape[1] != 3):
            faces = None
    return _scan(path, coord, color, normal, faces, others)


def _read_npy(path: Path) -> Scan:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read NPY ({e})") from e
    return _scan(path, *_columns(array, path, "an array"))


def _read_txt(path: Path) -> Scan:
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from e
    delimiter = "," if "," in head else None
    try:
        array = np.loadtxt(path, dtype=np.float64, comments="#", delimiter=delimiter, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: cannot read x y z [r g b] columns ({e})") from e
    if array.size == 0:
        return _scan(path, np.zeros((0, 3)), None)
    coord, color = _columns(array, path, "lines")
    if color is not None and np.all(np.isfinite(color)) and np.array_equal(color, np.rint(color)) and color.max() > 1:
        color = color.astype(np.int64)  # "0 128 255": integers written as text
    return _scan(path, coord, color)


def _read_pcd(path: Path) -> Scan:
    try:
        import open3d as o3d
    except ImportError as e:
        raise ValueError(f"{path}: reading PCD files needs open3d: {SCANS_EXTRA}") from e
    cloud = o3d.io.read_point_cloud(str(path), format="pcd")
    coord = np.asarray(cloud.points, dtype=np.float64)
    color = np.asarray(cloud.colors, dtype=np.float64) if cloud.has_colors() else None  # open3d: 0-1
    normal = np.asarray(cloud.normals, dtype=np.float32) if cloud.has_normals() else None
    if len(coord) == 0:  # open3d reports a broken file on its console and returns an empty cloud
        raise ValueError(f"{path}: no points (an empty or unreadable PCD file)")
    return _scan(path, coord, color, normal)


def _read_las(path: Path) -> Scan:
    try:
        import laspy
    except ImportError as e:
        raise ValueError(f"{path}: reading LAS / LAZ files needs laspy: {SCANS_EXTRA}") from e
    try:
        las = laspy.read(str(path))
    except Exception as e:  # laspy's errors (LaspyException and others) have no common base
        text = " ".join(str(e).split())
        if "LazBackend" in text or "laz" in text.lower() and path.suffix.lower() == ".laz":
            raise ValueError(f"{path}: reading LAZ files needs a LAZ backend (lazrs): {SCANS_EXTRA}") from e
        raise ValueError(f"{path}: cannot read LAS ({type(e).__name__}: {text})") from e
    coord = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1).astype(np.float64)
    names = set(las.point_format.dimension_names)
    color = None
    if {"red", "green", "blue"} <= names:
        color = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], axis=1)
        if not color.any():  # a point format with colour fields that the scanner left at 0
            color = None
    return _scan(path, coord, color)


def _scan(path: Path, coord: np.ndarray, color: np.ndarray | None, normal: np.ndarray | None = None,
          faces: np.ndarray | None = None, ply_elements: list | None = None) -> Scan:
    if coord.shape[0] == 0:
        raise ValueError(f"{path}: no points")
    encoding = None
    if color is not None:
        color, encoding = colors_to_255(color, path)
    if faces is not None and faces.size and (faces.min() < 0 or faces.max() >= coord.shape[0]):
        raise ValueError(f"{path}: faces index vertices outside 0..{coord.shape[0] - 1}")
    return Scan(path, coord, color, normal, faces, encoding, list(ply_elements or []))


_READERS = {
    ".ply": _read_ply,
    ".npy": _read_npy,
    ".txt": _read_txt,
    ".xyz": _read_txt,
    ".pcd": _read_pcd,
    ".las": _read_las,
    ".laz": _read_las,
}


def read_scan(path: str | os.PathLike) -> Scan:
    """A scan file as a :class:`Scan`, chosen by its extension; ValueError / OSError name the file
    (not found, a folder, an empty file, an unsupported format, unreadable content, no points)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(f"{path}: unsupported scan format {suffix or '(no extension)'!r}; "
                         f"supported: {', '.join(READ_FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: scan not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    return _READERS[suffix](path)


def output_path(out_dir: str | os.PathLike, scan_path: str | os.PathLike, fmt: str) -> Path:
    """``OUT/<scan name>.labels.<fmt>``: a name of its own, so an output never replaces its input."""
    return Path(out_dir) / f"{Path(scan_path).stem}.labels.{fmt}"


def write_labelled_scan(
    path: str | os.PathLike, scan: Scan, label: np.ndarray, color: np.ndarray, fmt: str
) -> Path:
    """Write the scan's points (original order, coordinates and dtype) with ``color`` uint8 (N, 3)
    and ``label`` int (N,) per point as ``fmt`` (ply / npy / txt), atomically."""
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"{path}: unknown output format {fmt!r}; choose one of {', '.join(WRITE_FORMATS)}")
    n = scan.num_points
    if label.shape != (n,) or color.shape != (n, 3):
        raise ValueError(f"{path}: {label.shape} labels and {color.shape} colours for {n} points")
    coord_dtype = scan.coord.dtype if scan.coord.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    table = np.empty(n, dtype=[("x", coord_dtype), ("y", coord_dtype), ("z", coord_dtype),
                               ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "i4")])
    for i, a in enumerate("xyz"):
        table[a] = scan.coord[:, i]
    for i, a in enumerate(("red", "green", "blue")):
        table[a] = color[:, i]
    table["label"] = label
    path = Path(path)
    with atomic_path(path) as tmp:
        if fmt == "ply":
            from plyfile import PlyData, PlyElement

            PlyData([PlyElement.describe(table, "vertex"), *scan.ply_elements]).write(str(tmp))
        elif fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, table, allow_pickle=False)
        else:
            # The fewest digits that give every float32 (9) or float64 (17) back exactly.
            digits = 9 if coord_dtype == np.float32 else 17
            fmt_row = " ".join([f"%.{digits}g"] * 3 + ["%d"] * 4)
            with open(tmp, "w", encoding="utf-8") as f:
                np.savetxt(f, table, fmt=fmt_row, header="x y z red green blue label")
    return path
