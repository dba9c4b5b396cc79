"""Vectorized triangle-mesh primitives and the per-class shape families built from them.

Every primitive is sampled at a target vertex spacing (about 2 cm for objects), like the
decimated ``_vh_clean_2`` meshes of ScanNet. Objects live in a local frame: footprint centred on
the origin, bottom at z = 0, width along x, depth along y with the back at +y (the side that goes
against a wall), height along z. Each vertex carries a ``part`` number that picks a colour of the
class palette, so composites (a table's top and legs) can differ in colour.

Hand-written rather than taken from a mesh library (trimesh, open3d) because those are not
dependencies of pointseg and their primitives are not sampled at a fixed spacing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# A point, direction or size: a tuple of floats or an array.
Vector = Sequence[float] | np.ndarray


@dataclass
class Mesh:
    verts: np.ndarray  # float64 (N, 3)
    faces: np.ndarray  # int64 (F, 3)
    part: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.verts)

    def moved(self, rotation: np.ndarray | None = None, offset: Vector = (0.0, 0.0, 0.0)) -> Mesh:
        """The mesh turned by ``rotation`` (3x3) and then shifted by ``offset``: placing an object
        in the room; faces and parts are shared, not copied."""
        v = self.verts if rotation is None else self.verts @ np.asarray(rotation).T
        return Mesh(v + np.asarray(offset, dtype=np.float64), self.faces, self.part)


def concat(meshes: list[Mesh]) -> Mesh:
    """One mesh from several, re-indexing the faces."""
    meshes = [m for m in meshes if len(m)]
    if not meshes:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int64))
    starts = np.cumsum([0] + [len(m) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.verts for m in meshes]),
        np.concatenate([m.faces + s for m, s in zip(meshes, starts)]),
        np.concatenate([m.part for m in meshes]),
    )


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


ROT_Z_TO_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # maps +z onto +x


def _grid_faces(nu: int, nv: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    a = (i * nv + j).ravel()
    b, c, d = a + nv, a + nv + 1, a + 1
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def quad(origin: Vector, u: Vector, v: Vector, spacing: float, part: int = 0) -> Mesh:
    """Planar patch ``origin + s u + t v`` (s, t in [0, 1]) as a regular triangle grid."""
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    nu = max(2, math.ceil(np.linalg.norm(u) / spacing) + 1)
    nv = max(2, math.ceil(np.linalg.norm(v) / spacing) + 1)
    s = np.linspace(0.0, 1.0, nu)[:, None, None]
    t = np.linspace(0.0, 1.0, nv)[None, :, None]
    verts = (origin + s * u + t * v).reshape(-1, 3)
    return Mesh(verts, _grid_faces(nu, nv), np.full(len(verts), part, np.int64))


def box(lo: Vector, hi: Vector, spacing: float, part: int = 0, bottom: bool = False, back: bool = True, top: bool = True) -> Mesh:
    """Axis-aligned box surface between corners ``lo`` and ``hi``; hidden faces can be left out."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    dx, dy, dz = (x1 - x0, 0, 0), (0, y1 - y0, 0), (0, 0, z1 - z0)
    faces = [
        quad((x0, y0, z0), dx, dz, spacing, part),  # front (-y)
        quad((x0, y0, z0), dy, dz, spacing, part),  # left
        quad((x1, y0, z0), dy, dz, spacing, part),  # right
    ]
    if back:
        faces.append(quad((x0, y1, z0), dx, dz, spacing, part))
    if top:
        faces.append(quad((x0, y0, z1), dx, dy, spacing, part))
    if bottom:
        faces.append(quad((x0, y0, z0), dx, dy, spacing, part))
    return concat(faces)


def _zip_rings(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Triangles between two closed rings of vertex ids with different counts (angle order)."""
    m, n = len(ia), len(ib)
    key = np.concatenate([np.arange(1, m + 1) / m, np.arange(1, n + 1) / n])
    is_a = np.concatenate([np.ones(m, bool), np.zeros(n, bool)])[np.argsort(key, kind="stable")]
    ca = np.cumsum(is_a) - is_a
    cb = np.cumsum(~is_a) - ~is_a
    a0, b0 = ia[ca % m], ib[cb % n]
    tri = np.where(
        is_a[:, None],
        np.stack([a0, ia[(ca + 1) % m], b0], 1),
        np.stack([a0, ib[(cb + 1) % n], b0], 1),
    )
    ok = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    return tri[ok]


def revolve(profile: Sequence[tuple[float, float]] | np.ndarray, spacing: float, scale_xy: tuple[float, float] = (1.0, 1.0), part: int = 0) -> Mesh:
    """Surface of revolution about z of a polyline of (radius, z) points, resampled at ``spacing``.

    Cylinders, caps, spheres, bowls and lamp shades are all one profile each; rings get as many
    vertices as their circumference needs, so spacing stays even from the rim to the centre.
    """
    p = np.asarray(profile, dtype=np.float64)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, math.ceil(arc[-1] / spacing) + 1)
    t = np.linspace(0.0, arc[-1], n)
    r = np.interp(t, arc, p[:, 0])
    z = np.interp(t, arc, p[:, 1])
    sx, sy = scale_xy
    circ_scale = math.sqrt((sx * sx + sy * sy) / 2.0)
    counts = np.where(r * circ_scale < spacing / 3, 1, np.maximum(6, np.ceil(2 * np.pi * r * circ_scale / spacing))).astype(int)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ring = np.repeat(np.arange(n), counts)
    ang = (np.arange(counts.sum()) - starts[ring]) / counts[ring] * 2 * np.pi
    verts = np.stack([r[ring] * np.cos(ang) * sx, r[ring] * np.sin(ang) * sy, z[ring]], 1)
    faces = [_zip_rings(np.arange(starts[k], starts[k] + counts[k]), np.arange(starts[k + 1], starts[k + 1] + counts[k + 1])) for k in range(n - 1)]
    faces = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    return Mesh(verts, faces.astype(np.int64), np.full(len(verts), part, np.int64))


def cylinder(radius: float, height: float, spacing: float, z0: float = 0.0, part: int = 0, scale_xy: tuple[float, float] = (1.0, 1.0), top: bool = True) -> Mesh:
    prof = [(radius, z0), (radius, z0 + height)] + ([(0.0, z0 + height)] if top else [])
    return revolve(prof, spacing, scale_xy, part)


def ellipsoid(radii: Vector, spacing: float, z0: float = 0.0, part: int = 0) -> Mesh:
    """Ellipsoid with semi-axes ``radii`` resting on z = z0."""
    rx, ry, rz = radii
    a = np.linspace(-np.pi / 2, np.pi / 2, 24)
    prof = np.stack([np.cos(a) * rx, z0 + rz + np.sin(a) * rz], 1)
    return revolve(prof, spacing, (1.0, ry / rx), part)


# ---------------------------------------------------------------------------------------------
# shape families: (size (w, d, h), rng, spacing) -> Mesh in the local object frame


def _legs(w: float, d: float, h: float, t: float, spacing: float, part: int) -> list[Mesh]:
    xs, ys = (-w / 2 + t, w / 2 - t), (-d / 2 + t, d / 2 - t)
    return [box((x - t / 2, y - t / 2, 0), (x + t / 2, y + t / 2, h), spacing, part, top=False) for x in xs for y in ys]


def f_box(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), sp)


def f_panel(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), sp, back=False)


def f_frame(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    t = 0.07
    return concat([
        box((-w / 2, -d / 2, 0), (-w / 2 + t, d / 2, h), sp, back=False),
        box((w / 2 - t, -d / 2, 0), (w / 2, d / 2, h), sp, back=False),
        box((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), sp, back=False),
    ])


def f_stairs(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    n = max(2, round(h / 0.18))
    run, rise = d / n, h / n
    return concat([box((-w / 2, -d / 2 + k * run, 0), (w / 2, -d / 2 + (k + 1) * run, (k + 1) * rise), sp, part=k % 2, back=k == n - 1) for k in range(n)])


def f_column(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    if rng.random() < 0.5:
        return cylinder(w / 2, h, sp, top=False)
    return box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), sp, top=False)


def f_stall(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    t = 0.04
    return concat([
        box((-w / 2, -d / 2, 0), (-w / 2 + t, d / 2, h), sp),
        box((w / 2 - t, -d / 2, 0), (w / 2, d / 2, h), sp),
        box((-w / 2, d / 2 - t, 0), (w / 2, d / 2, h), sp, part=1),
    ])


def f_rod(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return cylinder(d / 2, w, sp).moved(ROT_Z_TO_X, (-w / 2, 0, d / 2))


def f_disk(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return cylinder(w / 2, h, sp, scale_xy=(1.0, d / w))


def f_table(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return concat([box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h), sp)] + _legs(w, d, h - 0.04, 0.05, sp, 1))


def f_chair(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    seat = 0.45 * h / 0.9 if h > 0.6 else h * 0.55
    return concat(
        [box((-w / 2, -d / 2, seat - 0.05), (w / 2, d / 2, seat), sp), box((-w / 2, d / 2 - 0.05, seat), (w / 2, d / 2, h), sp, part=1)]
        + _legs(w, d, seat - 0.05, 0.04, sp, 2)
    )


def f_stool(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    if rng.random() < 0.4:  # upholstered block (ottoman-like)
        return box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), sp)
    return concat([box((-w / 2, -d / 2, h - 0.05), (w / 2, d / 2, h), sp)] + _legs(w, d, h - 0.05, 0.04, sp, 1))


def f_sofa(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    arm, back, seat = 0.15, 0.2, 0.45 * h
    return concat([
        box((-w / 2 + arm, -d / 2, 0), (w / 2 - arm, d / 2 - back, seat), sp),
        box((-w / 2, d / 2 - back, 0), (w / 2, d / 2, h), sp, part=1),
        box((-w / 2, -d / 2, 0), (-w / 2 + arm, d / 2 - back, 0.7 * h), sp, part=1),
        box((w / 2 - arm, -d / 2, 0), (w / 2, d / 2 - back, 0.7 * h), sp, part=1),
    ])


def f_bed(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return concat([
        box((-w / 2, -d / 2, 0), (w / 2, d / 2, 0.3), sp, part=1, top=False),
        box((-w / 2 + 0.02, -d / 2 + 0.02, 0.3), (w / 2 - 0.02, d / 2 - 0.02, h), sp, part=0),
        box((-w / 2, d / 2 - 0.05, 0), (w / 2, d / 2, h + 0.45), sp, part=1),
    ])


def f_shelf(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    t = 0.03
    n = max(2, round(h / 0.38))
    parts = [
        box((-w / 2, -d / 2, 0), (-w / 2 + t, d / 2, h), sp, back=False),
        box((w / 2 - t, -d / 2, 0), (w / 2, d / 2, h), sp, back=False),
        quad((-w / 2, d / 2 - 0.01, 0), (w, 0, 0), (0, 0, h), sp, part=1),
    ]
    parts += [box((-w / 2 + t, -d / 2, k * h / n - (t if k else 0)), (w / 2 - t, d / 2 - 0.01, k * h / n + (0 if k else t)), sp, back=False) for k in range(n + 1)]
    return concat(parts)


def shelf_levels(h: float) -> list[float]:
    """Heights of the boards of a shelf of height ``h`` (for placing books on every level)."""
    n = max(2, round(h / 0.38))
    return [k * h / n + (0.0 if k else 0.03) for k in range(n)]


def f_toilet(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    tank = box((-w / 2, d / 2 - 0.2, 0.35), (w / 2, d / 2, h), sp, back=False)
    bowl = revolve([(0.12, 0), (0.18, 0.3), (0.2, 0.4), (0.0, 0.4)], sp, (w / 0.4, 1.25))
    return concat([tank, bowl.moved(None, (0, d / 2 - 0.2 - 0.25, 0))])


def f_tub(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return concat([box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), sp, top=False), quad((-w / 2 + 0.06, -d / 2 + 0.06, 0.08), (w - 0.12, 0, 0), (0, d - 0.12, 0), sp)])


def f_cylinder(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    if rng.random() < 0.5:  # bottle-like: a neck
        return revolve([(w / 2, 0), (w / 2, 0.7 * h), (w / 5, 0.85 * h), (w / 5, h), (0, h)], sp, (1.0, d / w))
    return cylinder(w / 2, h, sp, scale_xy=(1.0, d / w))


def f_case(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    body = ellipsoid((w / 2, d / 2, 0.22 * h), sp)
    upper = ellipsoid((0.38 * w, d / 2, 0.16 * h), sp, z0=0.38 * h)
    neck = box((-0.05, -d / 4, 0.65 * h), (0.05, d / 4, h), sp, part=1)
    return concat([body, upper, neck])


def f_soft(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return ellipsoid((w / 2, d / 2, h / 2), sp)


def f_plant(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    pot = cylinder(0.3 * w, 0.3 * h, sp, part=1)
    leaves = ellipsoid((w / 2, d / 2, 0.35 * h), sp, z0=0.3 * h)
    return concat([pot, leaves])


def f_person(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    body = revolve([(0.12, 0), (0.16, 0.45 * h), (w / 2, 0.75 * h), (0.08, 0.85 * h)], sp, (1.0, d / w), part=1)
    head = ellipsoid((0.09, 0.1, 0.075 * h), sp, z0=0.85 * h)
    return concat([body, head])


def f_lamp(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    base = cylinder(0.35 * w, 0.03, sp, part=1)
    pole = cylinder(0.015, 0.75 * h, sp, part=1, top=False)
    shade = revolve([(0.25 * w, 0.7 * h), (w / 2, h), (0.0, h)], sp)
    return concat([base, pole, shade])


def f_pole(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    foot = box((-w / 2, -d / 2, 0), (w / 2, d / 2, min(0.25, h / 4)), sp, part=1)
    return concat([foot, cylinder(0.015, h, sp, top=False)])


def f_monitor(s: np.ndarray, rng: np.random.Generator, sp: float) -> Mesh:
    w, d, h = s
    return concat([
        box((-w / 2, -0.02, 0.25 * h), (w / 2, 0.02, h), sp),
        box((-0.03, 0.0, 0.0), (0.03, 0.03, 0.25 * h), sp, part=1, top=False),
        box((-0.12, -d / 2, 0.0), (0.12, d / 2, 0.015), sp, part=1),
    ])


FAMILIES: dict[str, Callable[[np.ndarray, np.random.Generator, float], Mesh]] = {
    "box": f_box, "panel": f_panel, "frame": f_frame, "stairs": f_stairs, "column": f_column,
    "stall": f_stall, "rod": f_rod, "disk": f_disk, "table": f_table, "chair": f_chair,
    "stool": f_stool, "sofa": f_sofa, "bed": f_bed, "shelf": f_shelf, "toilet": f_toilet,
    "tub": f_tub, "cylinder": f_cylinder, "case": f_case, "soft": f_soft, "plant": f_plant,
    "person": f_person, "lamp": f_lamp, "pole": f_pole, "monitor": f_monitor,
}


def build_shape(family: str, size: np.ndarray, rng: np.random.Generator, spacing: float) -> Mesh:
    """Mesh of one instance of ``family`` with bounding size ``size`` = (w, d, h)."""
    try:
        fn = FAMILIES[family]
    except KeyError:
        raise KeyError(f"unknown shape family {family!r}; known: {sorted(FAMILIES)}") from None
    return fn(np.asarray(size, dtype=np.float64), rng, spacing)
