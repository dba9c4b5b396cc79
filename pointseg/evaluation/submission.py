"""Benchmark submission files: ``<scene>.txt`` with one class id per mesh vertex, zipped.

The benchmark server wants the id of the predicted class (the dataset spec's ``ids``: the
``scannet_id`` 1..1191 for ScanNet200, the NYU40 id for ScanNet v2's 20 classes), one line per
vertex of ``<scene>_vh_clean_2.ply`` in mesh order, one file per test scene at the root of the
zip. Every function takes the spec; without one it is ScanNet200.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from pointseg.datasets import DatasetSpec, default_spec
from pointseg.preprocessing.raw import RAW_SCAN_FOLDER, mesh_file, raw_scene_dir, raw_scene_list
from pointseg.utils.io import atomic_path, atomic_write_text

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DIGITS_AND_SIGNS = re.compile(r"[0-9+-]*")
MAX_PROBLEMS_SHOWN = 5  # bad lines quoted per scene; the count is always given


def index_to_scannet_id(pred: np.ndarray, spec: DatasetSpec | None = None) -> np.ndarray:
    """Class indices 0..K−1 → the benchmark's ids (ScanNet ids for ScanNet200); any other value
    is an error (a submission must be valid)."""
    return (default_spec() if spec is None else spec).to_ids(pred)


def format_prediction(pred: np.ndarray, spec: DatasetSpec | None = None) -> str:
    """Text of one ``<scene>.txt``: the id of each vertex's class, one per line."""
    ids = index_to_scannet_id(np.asarray(pred).reshape(-1), spec)
    return "".join(f"{i}\n" for i in ids.tolist())


def write_prediction_txt(path: str | os.PathLike, pred: np.ndarray, spec: DatasetSpec | None = None) -> None:
    """Write one ``<scene>.txt`` (class indices in, the benchmark's ids out), atomically."""
    atomic_write_text(path, format_prediction(pred, spec))


def write_submission(
    path: str | os.PathLike, predictions: Mapping[str, np.ndarray], spec: DatasetSpec | None = None
) -> Path:
    """Zip ``{scene: per-vertex class indices}`` as ``<scene>.txt`` files at the zip root, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for scene in sorted(predictions):
                zf.writestr(f"{scene}.txt", format_prediction(predictions[scene], spec))
    return path


def write_submission_from_txt(path: str | os.PathLike, txt_files: Iterable[str | os.PathLike]) -> Path:
    """Zip already written ``<scene>.txt`` files (e.g. one per rank) at the zip root, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(Path(p) for p in txt_files):
                zf.write(f, arcname=f.name)
    return path


def parse_prediction_text(
    text: str, where: str, spec: DatasetSpec | None = None
) -> tuple[np.ndarray | None, list[str]]:
    """Parse one ``<scene>.txt``: (class ids or None, problems). ``where`` names the scene."""
    spec = default_spec() if spec is None else spec
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    problems: list[str] = []
    try:
        # Vectorised fast path; the loop below runs only to name the bad lines.
        stripped = [ln.strip() for ln in lines]
        if not _DIGITS_AND_SIGNS.fullmatch("".join(stripped)):  # numpy alone would accept "1_0"
            raise ValueError("not an integer")
        ids = np.array(stripped, dtype=np.str_).astype(np.int64) if lines else np.zeros(0, np.int64)
    except ValueError:
        bad = [i for i, ln in enumerate(lines) if not _INTEGER.fullmatch(ln.strip())]
        shown = ", ".join(f"line {i + 1}: {lines[i]!r}" for i in bad[:MAX_PROBLEMS_SHOWN])
        problems.append(f"{where}: {len(bad)} line(s) are not an integer ({shown})")
        return None, problems
    valid = np.isin(ids, spec.ids)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        shown = ", ".join(f"line {i + 1}: {ids[i]}" for i in bad[:MAX_PROBLEMS_SHOWN])
        problems.append(f"{where}: {bad.size} line(s) are not a {spec.display_name} class id ({shown})")
    return ids, problems


def read_submission(path: str | os.PathLike, spec: DatasetSpec | None = None) -> dict[str, np.ndarray]:
    """``{scene: class ids}`` of a submission zip; raises ValueError naming the first bad file."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            scene = name.removesuffix(".txt")
            ids, problems = parse_prediction_text(zf.read(name).decode("utf-8"), f"{path}: {name}", spec)
            if problems:
                raise ValueError(problems[0])
            out[scene] = ids
    return out


def ply_vertex_count(path: str | os.PathLike) -> int:
    """Vertex count from a PLY header only (``element vertex N``): fast, whatever the body size."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (first line is not 'ply')")
        for _ in range(10_000):  # a header is a few dozen lines
            line = f.readline()
            if not line or line.strip() == b"end_header":
                break
            parts = line.split()
            if len(parts) == 3 and parts[:2] == [b"element", b"vertex"]:
                try:
                    return int(parts[2])
                except ValueError:
                    raise ValueError(f"{path}: malformed vertex count {parts[2]!r}") from None
    raise ValueError(f"{path}: PLY header has no 'element vertex' line")


def check_raw_release(raw: str | os.PathLike, split: str) -> None:
    """Raise (one line) when ``raw`` has no folder of ``split``'s scans: a wrong ``--raw`` is one
    error, not one "mesh not found" per scene."""
    folder = Path(raw) / RAW_SCAN_FOLDER[split]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{raw}: no {RAW_SCAN_FOLDER[split]}/ folder: not a raw ScanNet v2 release with the {split} scans"
        )


def raw_vertex_counts(raw: str | os.PathLike, split: str = "test") -> tuple[dict[str, int], list[str]]:
    """``{scene: mesh vertex count}`` from the PLY headers of a raw release, and the problems met.

    Raises when ``raw`` is not a release holding the split's scans (:func:`check_raw_release`)."""
    check_raw_release(raw, split)
    counts: dict[str, int] = {}
    problems: list[str] = []
    for scene in raw_scene_list(raw, split):
        mesh = raw_scene_dir(raw, split, scene) / mesh_file(scene)
        try:
            counts[scene] = ply_vertex_count(mesh)
        except FileNotFoundError:
            problems.append(f"{scene}: mesh {mesh} not found, cannot check its line count")
            counts[scene] = -1
        except ValueError as e:
            problems.append(f"{scene}: {e}")
            counts[scene] = -1
    return counts, problems


def validate_submission(
    path: str | os.PathLike, expected: Mapping[str, int], spec: DatasetSpec | None = None
) -> list[str]:
    """Every problem of a submission zip against ``{scene: vertex count}`` (−1: count unknown).

    Checks: the zip opens; every entry is a ``<scene>.txt`` at the root; exactly one file per
    expected scene (missing, extra, duplicate); line count equals the vertex count; every line is an
    integer class id of ``spec`` (default ScanNet200). Returns an empty list when the submission
    is valid.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        return [f"{path}: cannot open as a zip file ({e})"]
    seen: set[str] = set()
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                problems.append(f"{name}: folder inside the zip; files must be at the zip root")
                continue
            if "/" in name or "\\" in name:
                problems.append(f"{name}: not at the zip root")
                continue
            if not name.endswith(".txt"):
                problems.append(f"{name}: not a <scene>.txt file")
                continue
            scene = name.removesuffix(".txt")
            if scene in seen:
                problems.append(f"{scene}: more than one file in the zip")
                continue
            seen.add(scene)
            if scene not in expected:
                problems.append(f"{scene}: extra file, not a scene of the split")
                continue
            try:
                text = zf.read(info).decode("utf-8")
            except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as e:
                problems.append(f"{scene}: cannot read {name} ({e})")
                continue
            ids, bad = parse_prediction_text(text, scene, spec)
            problems += bad
            n_lines = len(text.split("\n")) - (text == "" or text.endswith("\n"))
            if expected[scene] >= 0 and n_lines != expected[scene]:
                problems.append(f"{scene}: {n_lines} lines but the mesh has {expected[scene]} vertices")
    for scene in sorted(set(expected) - seen):
        problems.append(f"{scene}: missing from the zip")
    return problems
