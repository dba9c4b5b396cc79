"""Area-weighted vertex normals of a triangle mesh."""

from __future__ import annotations

import numpy as np

# Normal given to a vertex that touches no face of non-zero area: "up", so that every row of
# normal.npy has unit length (downstream features assume it) and the choice is visible.
FALLBACK_NORMAL = np.array([0.0, 0.0, 1.0])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) float32 unit normals: at each vertex, the normalized sum of the un-normalized cross
    products ``(b - a) x (c - a)`` of its faces, whose length is twice the face area, so larger
    faces weigh more (as Open3D's ``compute_vertex_normals``, which Pointcept's ScanNet
    preprocessing uses). Vertices with no face, or whose sum vanishes, get ``FALLBACK_NORMAL``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for axis in range(3):  # each face's cross product goes to its three corners
        for corner in range(3):  # bincount is a much faster scatter-add than np.add.at
            normals[:, axis] += np.bincount(f[:, corner], weights=cross[:, axis], minlength=len(v))
    return normalize(normals)


def normalize(normals: np.ndarray) -> np.ndarray:
    """Unit rows as float32; rows of (near) zero length become ``FALLBACK_NORMAL``."""
    normals = np.asarray(normals, dtype=np.float64)
    length = np.linalg.norm(normals, axis=1)
    tiny = length <= 1e-12 * max(float(length.max(initial=0.0)), 1e-300)
    out = np.empty_like(normals)
    out[~tiny] = normals[~tiny] / length[~tiny, None]
    out[tiny] = FALLBACK_NORMAL
    return out.astype(np.float32)
