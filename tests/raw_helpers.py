"""Tiny scans in the raw ScanNet layout for the preprocessing and reliability tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointseg.preprocessing.raw import write_raw_scene

UNKNOWN_LABEL = "no such raw category"


def grid_mesh(n: int = 4, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """n x n vertices on the plane z, two counter-clockwise triangles per cell (normal +z)."""
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    vertices = np.stack([jj.ravel(), ii.ravel(), np.full(n * n, z)], axis=1).astype(np.float64)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, b, d), (a, d, c)]
    return vertices, np.array(faces, dtype=np.int64)


def write_grid_scene(scans: Path, scene: str, groups=None, labelled: bool = True, axis=None, offset: float = 0.0):
    """4x4 grid; vertex row r has segment id 100 + r. Default groups: row 0 chair, row 1 wall,
    row 2 unknown raw category, row 3 in no group."""
    vertices, faces = grid_mesh(4)
    vertices[:, 0] += offset
    colors = (np.arange(48).reshape(16, 3) * 5).astype(np.uint8)
    if groups is None:
        groups = [
            {"id": 0, "segments": [100], "label": "chair"},
            {"id": 1, "segments": [101], "label": "wall"},
            {"id": 2, "segments": [102], "label": UNKNOWN_LABEL},
        ]
    seg = 100 + np.arange(16) // 4
    if labelled:
        write_raw_scene(scans / scene, scene, vertices, colors, faces, seg, groups, axis)
    else:
        write_raw_scene(scans / scene, scene, vertices, colors, faces, axis_alignment=axis)
    return vertices, colors, faces


def make_release(root: Path, train=(), val=(), test=()) -> Path:
    """A release folder with scene lists; scenes are written by the caller."""
    (root / "scans").mkdir(parents=True, exist_ok=True)
    for split, scenes in (("train", train), ("val", val), ("test", test)):
        (root / f"scannetv2_{split}.txt").write_text("".join(s + "\n" for s in scenes))
    return root
