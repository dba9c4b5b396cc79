"""Reading and writing one scan in the raw ScanNet v2 layout, with validation.

A scene folder of the raw release holds ``<scene>_vh_clean_2.ply`` (the annotation mesh),
``<scene>_vh_clean_2.0.010000.segs.json`` (one over-segment id per vertex),
``<scene>.aggregation.json`` (the annotated segment groups) and ``<scene>.txt`` (meta data,
among it ``axisAlignment``). Test scans ship only the mesh and the ``.txt``.

Every problem found while reading is raised as :class:`RawSceneError`, whose message is one
line naming the scene, the file and the problem, so that a driver over 1500 scans can report
each failure and go on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from pointseg import meta
from pointseg.data.scene import check_folder_name
from pointseg.utils.io import atomic_path

# Over-segmentation parameters of the ScanNet release, written into segs.json for fidelity only.
SEGS_PARAMS = {
    "kThresh": "0.0001",
    "segMinVerts": "20",
    "minPoints": "750",
    "maxPoints": "5000",
    "thinThresh": "0.05",
    "flatThresh": "0.001",
    "minLength": "0.02",
    "maxLength": "1",
}
APP_ID = "Annotator.v1.0.3"
FACE_DTYPE = np.dtype([("n", "u1"), ("v", "<i4", (3,))])  # PLY "property list uchar int"


# Folder of each split's scans in the release.
RAW_SCAN_FOLDER = {"train": "scans", "val": "scans", "test": "scans_test"}


def raw_scene_dir(raw: str | os.PathLike, split: str, scene_id: str) -> Path:
    """``RAW/scans/<scene>`` (train, val) or ``RAW/scans_test/<scene>``."""
    return Path(raw) / RAW_SCAN_FOLDER[split] / scene_id


def raw_scene_list(raw: str | os.PathLike | None, split: str) -> tuple[str, ...]:
    """Scenes of a split: ``RAW/scannetv2_<split>.txt`` when present, else the official list."""
    if raw is not None:
        f = Path(raw) / f"scannetv2_{split}.txt"
        if f.is_file():
            scenes = tuple(s.strip() for s in f.read_text(encoding="utf-8").splitlines() if s.strip())
            for scene in scenes:  # a name like ../x would be written outside the output folder
                try:
                    check_folder_name(scene)
                except ValueError as e:
                    raise ValueError(f"{f}: {e}") from None
            return scenes
    return meta.official_scene_list(split)


def mesh_file(scene_id: str) -> str:
    return f"{scene_id}_vh_clean_2.ply"


def segs_file(scene_id: str) -> str:
    return f"{scene_id}_vh_clean_2.0.010000.segs.json"


def aggregation_file(scene_id: str) -> str:
    return f"{scene_id}.aggregation.json"


def info_file(scene_id: str) -> str:
    return f"{scene_id}.txt"


class RawSceneError(ValueError):
    """A raw scan that cannot be used; ``str`` is one line: scene, file, problem."""

    def __init__(self, scene: str, file: str, problem: str):
        self.scene, self.file, self.problem = scene, file, problem
        super().__init__(f"{scene}: {file}: {' '.join(str(problem).split())}")


@dataclass
class RawScene:
    """One scan as read from disk; arrays keep the mesh's vertex order."""

    scene_id: str
    vertices: np.ndarray  # float32 (N, 3)
    colors: np.ndarray  # uint8 (N, 3)
    faces: np.ndarray  # int64 (F, 3), triangles
    seg_indices: np.ndarray | None  # int64 (N,) over-segment id per vertex; None for test scans
    seg_groups: list[dict] | None  # [{"id", "objectId", "segments", "label"}] in file order
    axis_alignment: np.ndarray  # float64 (4, 4), identity when the .txt has none


# ---------------------------------------------------------------------------------------------
# writing


def write_raw_scene(
    scene_dir: str | os.PathLike,
    scene_id: str,
    vertices: np.ndarray,
    colors: np.ndarray,
    faces: np.ndarray,
    seg_indices: np.ndarray | None = None,
    seg_groups: Sequence[dict] | None = None,
    axis_alignment: np.ndarray | None = None,
    scene_type: str | None = None,
) -> None:
    """Write one scan in the raw ScanNet layout (labelled when ``seg_indices`` is given).

    The folder is written whole or not at all: it replaces an existing ``scene_dir`` (files of
    the older one that this call does not write are gone), and a writer killed midway leaves
    only a hidden temporary beside it (``.<scene>.<random>.tmp``, which
    :func:`pointseg.utils.io.remove_temporaries` deletes).

    The bytes depend only on the inputs, so regenerating a synthetic scene gives identical files.
    Coordinates are written as given (NaN included): checking them is the reader's job, and
    tests need to write broken scans.
    """
    scene_dir = Path(scene_dir)
    vertices = np.asarray(vertices)
    colors = np.asarray(colors)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{scene_id}: vertices must have shape (N, 3), got {vertices.shape}")
    n = len(vertices)
    if colors.shape != (n, 3):
        raise ValueError(f"{scene_id}: colors must have shape ({n}, 3), got {colors.shape}")
    if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise ValueError(f"{scene_id}: colors must lie in 0..255")
    faces = faces.reshape(-1, 3) if faces.size == 0 else faces
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.dtype.kind not in "iu"):
        raise ValueError(f"{scene_id}: faces must be an integer array (F, 3), got {faces.shape}")
    if (seg_indices is None) != (seg_groups is None):
        raise ValueError(f"{scene_id}: give both seg_indices and seg_groups, or neither")
    texts = {}  # everything is checked before the first file is written
    if seg_indices is not None:
        seg_indices = np.asarray(seg_indices)
        if seg_indices.shape != (n,) or (n and seg_indices.dtype.kind not in "iu"):
            raise ValueError(f"{scene_id}: seg_indices must be an integer array ({n},)")
        segs = {"params": SEGS_PARAMS, "sceneId": scene_id, "segIndices": seg_indices.tolist()}
        groups = [
            {
                "id": int(g["id"]),
                "objectId": int(g.get("objectId", g["id"])),
                "segments": np.asarray(g["segments"], dtype=np.int64).ravel().tolist(),
                "label": str(g["label"]),
            }
            for g in seg_groups
        ]
        agg = {
            "sceneId": f"scannet.{scene_id}",
            "appId": APP_ID,
            "segGroups": groups,
            "segmentsFile": f"scannet.{segs_file(scene_id)}",
        }
        texts[segs_file(scene_id)] = json.dumps(segs)
        texts[aggregation_file(scene_id)] = json.dumps(agg)
    lines = []
    if axis_alignment is not None:
        m = np.asarray(axis_alignment, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"{scene_id}: axis_alignment must be 4x4, got {m.shape}")
        lines.append("axisAlignment = " + " ".join(repr(float(x)) for x in m.ravel()))
    if scene_type is not None:
        lines.append(f"sceneType = {scene_type}")
    texts[info_file(scene_id)] = "".join(ln + "\n" for ln in lines)

    # The folder is filled under a temporary name and renamed into place (replacing an older
    # one), so a killed writer leaves no half-written scene under the scene's name.
    with atomic_path(scene_dir) as tmp:
        tmp.mkdir()
        _write_mesh(tmp / mesh_file(scene_id), vertices, colors, faces)
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")


def _write_mesh(path: Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY in the layout of ScanNet's ``_vh_clean_2.ply``.

    plyfile writes the header and the vertex block; the face block is written here with one
    structured-array copy because plyfile serializes list properties one row at a time in Python,
    which takes seconds for a 300k-face mesh. The bytes are those plyfile would write.
    """
    vert = np.empty(
        len(vertices),
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vert["x"], vert["y"], vert["z"] = (vertices[:, i].astype(np.float32) for i in range(3))
    vert["red"], vert["green"], vert["blue"] = (colors[:, i].astype(np.uint8) for i in range(3))
    face = np.empty(len(faces), dtype=FACE_DTYPE)
    face["n"] = 3
    face["v"] = faces.astype(np.int32)
    vertex_el = PlyElement.describe(vert, "vertex")
    # An empty object array only serves to get the header line "property list uchar int ...".
    face_el = PlyElement.describe(
        np.empty(len(faces), dtype=[("vertex_indices", "O")]),
        "face",
        val_types={"vertex_indices": "i4"},
        len_types={"vertex_indices": "u1"},
    )
    header = PlyData([vertex_el, face_el], text=False, byte_order="<").header
    with open(path, "wb") as f:  # inside the scene's temporary folder (write_raw_scene)
        f.write(header.encode("ascii") + b"\n")
        f.write(vert.tobytes())
        f.write(face.tobytes())


# ---------------------------------------------------------------------------------------------
# reading


def read_raw_scene(scene_dir: str | os.PathLike, scene_id: str, labelled: bool) -> RawScene:
    """Read and validate one scan; ``labelled`` also reads the segments and the aggregation.

    Raises :class:`RawSceneError` for a missing file, a truncated or malformed PLY, malformed
    JSON, a ``segIndices`` length that differs from the vertex count, NaN/inf coordinates, an
    empty mesh or faces that index outside the vertices.
    """
    scene_dir = Path(scene_dir)
    vertices, colors, faces = _read_mesh(scene_dir, scene_id)
    axis_alignment = _read_axis_alignment(scene_dir, scene_id)
    seg_indices = seg_groups = None
    if labelled:
        seg_indices = _read_seg_indices(scene_dir, scene_id, len(vertices))
        seg_groups = _read_seg_groups(scene_dir, scene_id)
    return RawScene(scene_id, vertices, colors, faces, seg_indices, seg_groups, axis_alignment)


def _require(scene_dir: Path, scene_id: str, name: str) -> Path:
    path = scene_dir / name
    if not path.is_file():
        raise RawSceneError(scene_id, name, "missing file")
    return path


def _read_mesh(scene_dir: Path, scene_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    name = mesh_file(scene_id)
    path = _require(scene_dir, scene_id, name)
    err = lambda problem: RawSceneError(scene_id, name, problem)  # noqa: E731
    try:
        try:
            # Memory-mapped read: fast, but only for faces that are all triangles.
            ply = PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})
        except PlyParseError as e:
            if "unexpected list length" not in str(e):
                raise
            ply = PlyData.read(str(path), mmap=False)
        names = [el.name for el in ply.elements]
        if "vertex" not in names:
            raise err("no 'vertex' element")
        v = ply["vertex"].data
        missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in v.dtype.names]
        if missing:
            raise err(f"vertex element lacks {', '.join(missing)}")
        vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
        colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
        faces = np.zeros((0, 3), dtype=np.int64)
        if "face" in names:
            faces = _triangles(ply["face"].data, err)
        del ply, v
    except RawSceneError:
        raise
    except (PlyParseError, ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        problem = str(e) or type(e).__name__
        raise err(f"cannot read PLY ({problem})") from e
    if len(vertices) == 0:
        raise err("empty mesh (0 vertices)")
    if len(faces) == 0:
        raise err("empty mesh (0 faces)")
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise err(f"{int(bad.sum())} vertices have NaN/inf coordinates (first: vertex {int(np.argmax(bad))})")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise err(f"faces index vertices outside 0..{len(vertices) - 1} (min {faces.min()}, max {faces.max()})")
    return vertices, colors, faces


def _triangles(face_data: np.ndarray, err) -> np.ndarray:
    """(F, 3) int64 triangles; polygons (rare, never in ScanNet) are split into fans."""
    key = "vertex_indices" if "vertex_indices" in face_data.dtype.names else "vertex_index"
    if key not in face_data.dtype.names:
        raise err("face element lacks vertex_indices")
    col = face_data[key]
    if col.dtype != object:  # memory-mapped fixed-length lists: already (F, 3)
        return np.asarray(col, dtype=np.int64).reshape(-1, 3)
    tris = []
    for poly in col:  # fallback for variable-length faces only
        poly = np.asarray(poly, dtype=np.int64)
        if len(poly) < 3:
            raise err(f"a face has {len(poly)} vertices")
        tris.append(np.stack([np.full(len(poly) - 2, poly[0]), poly[1:-1], poly[2:]], axis=1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), dtype=np.int64)


def _read_axis_alignment(scene_dir: Path, scene_id: str) -> np.ndarray:
    """``axisAlignment`` of ``<scene>.txt`` as a 4x4 matrix; identity when the line is absent.

    The file itself is required, as in the official script, which always opens it.
    """
    name = info_file(scene_id)
    path = _require(scene_dir, scene_id, name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RawSceneError(scene_id, name, f"cannot read ({e})") from e
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "axisAlignment":
            try:
                numbers = np.array([float(x) for x in value.split()], dtype=np.float64)
            except ValueError as e:
                raise RawSceneError(scene_id, name, f"axisAlignment is not numeric ({e})") from e
            if numbers.size != 16 or not np.isfinite(numbers).all():
                raise RawSceneError(scene_id, name, f"axisAlignment needs 16 finite numbers, got {numbers.size}")
            m = numbers.reshape(4, 4)
            if abs(np.linalg.det(m[:3, :3])) < 1e-12:
                raise RawSceneError(scene_id, name, "axisAlignment is singular")
            return m
    return np.eye(4)


def _load_json(scene_dir: Path, scene_id: str, name: str) -> Any:
    path = _require(scene_dir, scene_id, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RawSceneError(scene_id, name, f"malformed JSON ({e})") from e
    except OSError as e:
        raise RawSceneError(scene_id, name, f"cannot read ({e})") from e


def _int_array(values: Any) -> np.ndarray | None:
    """1-D int64 array of a JSON list of integers, or None when it is anything else."""
    if not isinstance(values, list):
        return None
    if not values:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.array(values)
    except (ValueError, OverflowError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iu":  # bools, floats, strings, nested lists
        return None
    return arr.astype(np.int64)


def _read_seg_indices(scene_dir: Path, scene_id: str, num_vertices: int) -> np.ndarray:
    name = segs_file(scene_id)
    data = _load_json(scene_dir, scene_id, name)
    if not isinstance(data, dict) or "segIndices" not in data:
        raise RawSceneError(scene_id, name, "no 'segIndices' key")
    seg = _int_array(data["segIndices"])
    if seg is None:
        raise RawSceneError(scene_id, name, "'segIndices' is not a list of integers")
    if len(seg) != num_vertices:
        problem = f"segIndices has {len(seg)} entries but the mesh has {num_vertices} vertices"
        raise RawSceneError(scene_id, name, problem)
    return seg


def _read_seg_groups(scene_dir: Path, scene_id: str) -> list[dict]:
    name = aggregation_file(scene_id)
    data = _load_json(scene_dir, scene_id, name)
    if not isinstance(data, dict) or not isinstance(data.get("segGroups"), list):
        raise RawSceneError(scene_id, name, "no 'segGroups' list")
    groups = []
    for k, g in enumerate(data["segGroups"]):
        if not isinstance(g, dict):
            raise RawSceneError(scene_id, name, f"segGroups[{k}] is not an object")
        segments = _int_array(g.get("segments"))
        gid = g.get("id")
        label = g.get("label")
        if segments is None:
            raise RawSceneError(scene_id, name, f"segGroups[{k}].segments is not a list of integers")
        if not isinstance(gid, int) or isinstance(gid, bool):
            raise RawSceneError(scene_id, name, f"segGroups[{k}].id is not an integer")
        if not isinstance(label, str):
            raise RawSceneError(scene_id, name, f"segGroups[{k}].label is not a string")
        groups.append({"id": gid, "objectId": g.get("objectId", gid), "segments": segments, "label": label})
    return groups
