"""Room types and context-aware object placement.

A room is an axis-aligned box [0, L] x [0, W] with the floor at z = 0. Its size follows the vertex
budget: structure (floor, walls, sometimes a ceiling) takes about 40 % of the vertices and objects
fill the rest. Objects are placed by kind (against a wall, free on the floor, mounted on a wall,
on a support, under the ceiling) and spawn their context (``catalog.CONTEXT``): pillows on beds,
monitors and keyboards on desks, toilet paper by toilets, books on shelves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pointseg.synthetic import catalog as cat
from pointseg.synthetic import shapes
from pointseg.synthetic.shapes import Mesh, Vector

OBJECT_SPACING = 0.02  # metres between vertices on objects
# Walls, floors and ceilings are planar; ScanNet's decimated meshes are coarser there.
STRUCTURE_SPACING = 0.03
STRUCTURE_SHARE = 0.4
MIN_ROOM = 1.8  # shortest room side, metres
MIN_WALL = 1.0  # lowest scanned wall height, metres
ROOM_AREA_FACTOR = {"bathroom": 0.75, "storage": 0.85, "laundry": 0.85, "classroom": 1.3, "living_room": 1.1}

# Furniture that defines a room type: (class name, probability, max count).
ANCHORS: dict[str, tuple[tuple[str, float, int], ...]] = {
    "bedroom": (("bed", 0.95, 1), ("dresser", 0.5, 1), ("wardrobe", 0.3, 1), ("desk", 0.25, 1)),
    "office": (("desk", 0.95, 3), ("bookshelf", 0.4, 1), ("file cabinet", 0.4, 1), ("trash can", 0.6, 1)),
    "kitchen": (("kitchen counter", 0.9, 1), ("kitchen cabinet", 0.8, 2), ("refrigerator", 0.7, 1), ("stove", 0.4, 1), ("dining table", 0.4, 1)),
    "bathroom": (("toilet", 0.95, 1), ("bathroom vanity", 0.6, 1), ("bathtub", 0.4, 1), ("towel", 0.6, 2)),
    "living_room": (("couch", 0.9, 1), ("tv stand", 0.6, 1), ("armchair", 0.5, 2), ("plant", 0.3, 1)),
    "classroom": (("table", 0.9, 4), ("chair", 0.9, 4), ("whiteboard", 0.6, 1), ("blackboard", 0.3, 1)),
    "storage": (("shelf", 0.9, 2), ("box", 0.9, 4), ("storage bin", 0.4, 2)),
    "laundry": (("washing machine", 0.9, 1), ("clothes dryer", 0.8, 1), ("laundry basket", 0.6, 1)),
}


Rect = tuple[float, float, float, float]  # (x0, x1, y0, y1) of a floor footprint


@dataclass
class SceneObject:
    """One object of a scene; ``scannet_id`` 0 = not one of the 200, ``label`` None = unannotated."""

    scannet_id: int
    label: str | None
    mesh: Mesh
    colors: np.ndarray  # float64 (N, 3)


@dataclass
class _Placed:
    spec: cat.ClassSpec | None
    center: np.ndarray  # (x, y) of the footprint centre
    yaw: float
    size: np.ndarray
    z0: float
    wall: int | None = None


@dataclass
class Room:
    length: float
    width: float
    height: float  # scanned wall height
    ceiling: bool
    walls: list[int]  # present walls: 0 south (y=0), 1 east (x=L), 2 north (y=W), 3 west (x=0)
    room_type: str
    rng: np.random.Generator
    objects: list[SceneObject] = field(default_factory=list)
    placed: list[_Placed] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)
    n_vertices: int = 0
    # vertex spacing of objects and of walls / floors / ceilings (benchmarks with smaller scenes
    # sample coarser)
    object_spacing: float = OBJECT_SPACING
    structure_spacing: float = STRUCTURE_SPACING

    # -- geometry of walls ------------------------------------------------------------------
    def wall_frame(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(start point, unit direction along the wall, inward normal, length) of wall ``k``."""
        L, W = self.length, self.width
        return {
            0: (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), L),
            1: (np.array([L, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), W),
            2: (np.array([L, W]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), L),
            3: (np.array([0.0, W]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), W),
        }[k]

    @staticmethod
    def yaw_facing(normal: np.ndarray) -> float:
        """Yaw that turns the local back (+y) towards the wall of inward ``normal``."""
        return math.atan2(normal[0], -normal[1])

    def footprint(self, center: Vector, yaw: float, size: Vector) -> Rect:
        """Axis-aligned floor rectangle (x0, x1, y0, y1) of a turned object, for overlap tests."""
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        size = [float(size[0]), float(size[1])]
        hx = (size[0] * c + size[1] * s) / 2
        hy = (size[0] * s + size[1] * c) / 2
        return (center[0] - hx, center[0] + hx, center[1] - hy, center[1] + hy)

    def fits(self, rect: Rect) -> bool:
        """Whether ``rect`` lies in the room and keeps 2 cm from every occupied rectangle."""
        x0, x1, y0, y1 = rect
        if x0 < -1e-6 or y0 < -1e-6 or x1 > self.length + 1e-6 or y1 > self.width + 1e-6:
            return False
        return all(x1 <= a0 + 0.02 or x0 >= a1 - 0.02 or y1 <= b0 + 0.02 or y0 >= b1 - 0.02 for a0, a1, b0, b1 in self.rects)

    # -- adding objects -----------------------------------------------------------------------
    def add(
        self, spec: cat.ClassSpec | None, mesh: Mesh, center: Vector, yaw: float, z0: float, size: Vector,
        label: str | None = None, wall: int | None = None, sid: int | None = None, palette: np.ndarray | None = None,
    ) -> _Placed:
        """Move ``mesh`` into place, colour it and record it; without ``spec`` (an object outside
        the 200) ``label``, ``sid`` and ``palette`` say what it is."""
        mesh = mesh.moved(shapes.rot_z(yaw), (center[0], center[1], z0))
        rng = self.rng
        pal = (spec.palette if spec is not None else palette).astype(np.float64)
        base = rng.integers(len(pal))
        inst = pal[(base + np.arange(4)) % len(pal)] + rng.normal(0, 12, size=(4, 3))
        colors = inst[np.minimum(mesh.part, 3)]
        if spec is not None:
            label = label if label is not None else pick_raw_name(spec, rng)
            sid = spec.scannet_id
        self.objects.append(SceneObject(int(sid or 0), label, mesh, colors))
        self.n_vertices += len(mesh)
        p = _Placed(spec, np.asarray(center, dtype=np.float64), yaw, np.asarray(size), z0, wall)
        self.placed.append(p)
        return p


def pick_raw_name(spec: cat.ClassSpec, rng: np.random.Generator) -> str:
    """Mostly the class's main raw name, sometimes one of its other tsv spellings."""
    if len(spec.raw_names) == 1 or rng.random() < 0.7:
        return spec.raw_names[0]
    return spec.raw_names[int(rng.integers(1, len(spec.raw_names)))]


def sample_size(spec: cat.ClassSpec, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 1) * 0.7 + rng.uniform(0, 1, size=3) * 0.3  # mostly one overall scale
    return spec.size_lo + t * (spec.size_hi - spec.size_lo)


def make_room(rng: np.random.Generator, room_type: str, vertices: int) -> Room:
    """Pick the room's size so that its structure takes about STRUCTURE_SHARE of ``vertices``."""
    n_walls = int(rng.choice([2, 3, 4], p=[0.15, 0.35, 0.5]))
    first = int(rng.integers(4))
    walls = sorted((first + k) % 4 for k in range(n_walls))
    ceiling = bool(rng.random() < 0.3)
    height = float(rng.uniform(2.4, 2.8))
    scanned = height if ceiling else float(rng.uniform(1.9, height))
    aspect = float(rng.uniform(1.0, 1.6))
    area = STRUCTURE_SHARE * vertices * STRUCTURE_SPACING**2 * ROOM_AREA_FACTOR.get(room_type, 1.0)
    # floor (+ ceiling) a x^2, walls (sum of lengths / x) * scanned * x
    perim = sum(aspect if k % 2 == 0 else 1.0 for k in walls)
    c2 = aspect * (2.0 if ceiling else 1.0)
    c1 = perim * scanned
    x = (-c1 + math.sqrt(c1 * c1 + 4 * c2 * area)) / (2 * c2)
    if x < MIN_ROOM:
        # small budgets: keep a usable floor and scan the walls lower (partial scans are common)
        x = MIN_ROOM
        scanned = max(MIN_WALL, (area - c2 * x * x) / (perim * x))
        height = scanned if ceiling else height
    return Room(length=aspect * x, width=x, height=scanned, ceiling=ceiling, walls=walls, room_type=room_type, rng=rng)


def build_structure(room: Room, specs: dict[str, cat.ClassSpec] | None = None) -> None:
    """Floor, the room's walls and its ceiling (if any), drawn as ``specs`` (name -> spec; default
    the full catalogue's) says."""
    by = cat.class_by_name() if specs is None else specs
    L, W, H, sp = room.length, room.width, room.height, room.structure_spacing
    floor = shapes.quad((0, 0, 0), (L, 0, 0), (0, W, 0), sp)
    room.add(by["floor"], floor, (0, 0), 0.0, 0.0, (L, W, 0))
    for k in room.walls:
        start, along, normal, length = room.wall_frame(k)
        m = shapes.quad((start[0], start[1], 0), (along[0] * length, along[1] * length, 0), (0, 0, H), sp)
        room.add(by["wall"], m, (0, 0), 0.0, 0.0, (length, 0, H), wall=k)
    if room.ceiling:
        m = shapes.quad((0, 0, H), (L, 0, 0), (0, W, 0), sp)
        room.add(by["ceiling"], m, (0, 0), 0.0, 0.0, (L, W, 0))


# ---------------------------------------------------------------------------------------------
# placement by kind


def place(room: Room, spec: cat.ClassSpec, force: bool = False, depth: int = 0, context: bool = True) -> _Placed | None:
    """Place one instance of ``spec`` where its kind says; ``force`` places it even if crowded,
    ``context`` lets it spawn what goes with it (off for benchmarks with a closed class set)."""
    rng = room.rng
    size = sample_size(spec, rng)
    kind = spec.place
    if kind in ("door", "window"):
        p = _on_wall(room, spec, size, z=(0.0, 0.0) if kind == "door" else (0.8, max(0.8, room.height - size[2] - 0.1)), force=force)
    elif kind == "against_wall" or (kind == "companion" and depth == 0):
        p = _against_wall(room, spec, size, force)
    elif kind == "free":
        p = _free(room, spec, size, force)
    elif kind == "wall":
        p = _on_wall(room, spec, size, spec.z, force)
    elif kind == "surface":
        p = _on_support(room, spec, size, None, force)
    elif kind == "ceiling":
        p = _ceiling(room, spec, size)
    else:
        return None
    if p is not None and context and depth < 2:
        spawn_context(room, p, depth)
    return p


def _mesh(room: Room, spec: cat.ClassSpec, size) -> Mesh:
    return shapes.build_shape(spec.family, size, room.rng, room.object_spacing)


def _against_wall(room: Room, spec, size, force: bool, tries: int = 12):
    rng = room.rng
    for attempt in range(tries + (1 if force else 0)):
        k = int(rng.choice(room.walls))
        start, along, normal, length = room.wall_frame(k)
        w = min(size[0], length - 0.02)
        t = rng.uniform(w / 2, max(w / 2, length - w / 2))
        center = start + along * t + normal * (size[1] / 2 + 0.02)
        yaw = room.yaw_facing(normal)
        rect = room.footprint(center, yaw, size)
        if room.fits(rect) or attempt == tries:
            room.rects.append(rect)
            return room.add(spec, _mesh(room, spec, size), center, yaw, 0.0, size, wall=k)
    return None


def _free(room: Room, spec, size, force: bool, tries: int = 12):
    rng = room.rng
    for attempt in range(tries + (1 if force else 0)):
        yaw = float(rng.integers(4)) * math.pi / 2
        hx = (size[0] if attempt % 2 == 0 else size[1]) / 2
        center = np.array([rng.uniform(min(hx, room.length / 2), max(room.length - hx, room.length / 2)), rng.uniform(min(hx, room.width / 2), max(room.width - hx, room.width / 2))])
        rect = room.footprint(center, yaw, size)
        if room.fits(rect) or attempt == tries:
            room.rects.append(rect)
            return room.add(spec, _mesh(room, spec, size), center, yaw, 0.0, size)
    return None


def _on_wall(room: Room, spec, size, z, force: bool, wall: int | None = None, t: float | None = None):
    rng = room.rng
    k = int(rng.choice(room.walls)) if wall is None else wall
    start, along, normal, length = room.wall_frame(k)
    size = size.copy()
    size[0] = min(size[0], length - 0.1)
    if t is None:
        t = rng.uniform(size[0] / 2, max(size[0] / 2, length - size[0] / 2))
    z0 = float(rng.uniform(*sorted(z)))
    z0 = max(0.0, min(z0, room.height - size[2] - 0.02)) if spec.place != "door" else 0.0
    center = start + along * t + normal * (size[1] / 2 + 0.01)
    return room.add(spec, _mesh(room, spec, size), center, room.yaw_facing(normal), z0, size, wall=k)


def _ceiling(room: Room, spec, size):
    rng = room.rng
    center = np.array([rng.uniform(0.3, room.length - 0.3), rng.uniform(0.3, room.width - 0.3)])
    z0 = room.height - size[2] - (0.0 if spec.family != "rod" else 0.1)
    return room.add(spec, _mesh(room, spec, size), center, float(rng.integers(2)) * math.pi / 2, z0, size)


def _top_levels(p: _Placed) -> list[float]:
    if p.spec is not None and p.spec.family == "shelf":
        return [p.z0 + h for h in shapes.shelf_levels(float(p.size[2]))]
    return [p.z0 + float(p.size[2])]


def _on_support(room: Room, spec, size, parent: _Placed | None, force: bool):
    rng = room.rng
    if parent is None:
        supports = [p for p in room.placed if p.spec is not None and p.spec.support]
        if not supports:
            return _free(room, spec, size, force) if force or rng.random() < 0.5 else None
        parent = supports[int(rng.integers(len(supports)))]
    size = size.copy()
    size[0] = min(size[0], parent.size[0] * 0.9)
    size[1] = min(size[1], parent.size[1] * 0.9)
    u = rng.uniform(-1, 1) * (parent.size[0] - size[0]) / 2
    v = rng.uniform(-1, 1) * (parent.size[1] - size[1]) / 2
    if spec.family in ("monitor", "panel"):  # screens stand at the back
        v = (parent.size[1] - size[1]) / 2
    c, s = math.cos(parent.yaw), math.sin(parent.yaw)
    center = parent.center + np.array([c * u - s * v, s * u + c * v])
    levels = _top_levels(parent)
    z0 = levels[int(rng.integers(len(levels)))]
    return room.add(spec, _mesh(room, spec, size), center, parent.yaw, z0, size)


def _relative(room: Room, spec, parent: _Placed, relation: str):
    rng = room.rng
    size = sample_size(spec, rng)
    c, s = math.cos(parent.yaw), math.sin(parent.yaw)
    ex, ey = np.array([c, s]), np.array([-s, c])  # parent's local x and y (back) axes
    if relation == "on":
        return _on_support(room, spec, size, parent, True)
    if relation == "beside":
        side = 1.0 if rng.random() < 0.5 else -1.0
        off = (parent.size[0] + size[0]) / 2 + 0.05
        back = (parent.size[1] - size[1]) / 2 if parent.wall is not None else 0.0
        center = parent.center + ex * side * off + ey * back
        rect = room.footprint(center, parent.yaw, size)
        if not room.fits(rect):
            center = parent.center - ex * side * off + ey * back
            rect = room.footprint(center, parent.yaw, size)
            if not room.fits(rect):
                return None
        room.rects.append(rect)
        return room.add(spec, _mesh(room, spec, size), center, parent.yaw, 0.0, size)
    if relation == "front":
        along = rng.uniform(-0.3, 0.3) * parent.size[0]
        center = parent.center - ey * ((parent.size[1] + size[1]) / 2 + 0.1) + ex * along
        center = np.clip(center, 0.2, [room.length - 0.2, room.width - 0.2])
        room.rects.append(room.footprint(center, parent.yaw, size))
        return room.add(spec, _mesh(room, spec, size), center, parent.yaw + math.pi, 0.0, size)
    if relation == "above":
        if parent.wall is None:
            return _on_wall(room, spec, size, spec.z, True)
        start, along, normal, length = room.wall_frame(parent.wall)
        t = float(np.dot(parent.center - start, along))
        top = parent.z0 + parent.size[2] + 0.1
        return _on_wall(room, spec, size, (top, top + 0.3), True, wall=parent.wall, t=t)
    if relation in ("window", "door"):
        w, h = parent.size[0], parent.size[2]
        if spec.name == "windowsill":
            size = np.array([w + 0.1, size[1], size[2]])
            z0 = parent.z0 - size[2]
            center = parent.center + ey * (parent.size[1] / 2 - size[1] / 2)
        elif spec.name == "doorframe":
            size = np.array([w + 0.14, size[1], h + 0.07])
            z0 = 0.0
            center = parent.center - ey * 0.01
        else:  # curtains and blinds hang in front of the window
            extra = 0.3 if spec.name == "curtain" else 0.02
            size = np.array([w + extra, size[1], h + (0.3 if spec.name == "curtain" else 0.0)])
            z0 = max(0.0, parent.z0 - (0.15 if spec.name == "curtain" else 0.0))
            center = parent.center - ey * (parent.size[1] / 2 + size[1] / 2 + 0.03)
        return room.add(spec, _mesh(room, spec, size), center, parent.yaw, z0, size)
    raise ValueError(f"unknown context relation {relation!r}")


def spawn_context(room: Room, parent: _Placed, depth: int) -> None:
    """Add what goes with ``parent`` (catalog.CONTEXT), each with its probability."""
    if parent.spec is None:
        return
    by = cat.class_by_name()
    for pname, child, prob, relation in CONTEXT_BY_PARENT.get(parent.spec.name, ()):
        if room.rng.random() < prob:
            p = _relative(room, by[child], parent, relation)
            if p is not None and depth < 1:
                spawn_context(room, p, depth + 1)


def place_companion(room: Room, spec: cat.ClassSpec) -> _Placed | None:
    """A class that lives only next to a parent (doorframe, curtain ...), placed for sure."""
    for pname, child, prob, relation in cat.CONTEXT:
        if child == spec.name:
            parents = [p for p in room.placed if p.spec is not None and p.spec.name == pname]
            if parents:
                return _relative(room, spec, parents[int(room.rng.integers(len(parents)))], relation)
    return place(room, spec, force=True)


CONTEXT_BY_PARENT: dict[str, tuple[tuple[str, str, float, str], ...]] = {}
for _rule in cat.CONTEXT:
    CONTEXT_BY_PARENT[_rule[0]] = CONTEXT_BY_PARENT.get(_rule[0], ()) + (_rule,)


def room_pool(room_type: str) -> list[cat.ClassSpec]:
    """Classes that may be drawn at random in a room of this type."""
    return [c for c in cat.catalog() if room_type in c.rooms and c.place not in ("structure", "companion", "door", "window")]


def add_outside_object(room: Room, label: str) -> None:
    """An object whose raw category is not one of the 200 (its vertices must end up ignored)."""
    rng = room.rng
    family = ("box", "cylinder", "soft", "disk")[int(rng.integers(4))]
    size = rng.uniform([0.1, 0.1, 0.05], [0.6, 0.5, 0.5])
    mesh = shapes.build_shape(family, size, rng, room.object_spacing)
    palette = cat.palette_of(label, ())
    supports = [p for p in room.placed if p.spec is not None and p.spec.support]
    if supports and rng.random() < 0.6:
        parent = supports[int(rng.integers(len(supports)))]
        size[:2] = np.minimum(size[:2], parent.size[:2] * 0.9)
        mesh = shapes.build_shape(family, size, rng, room.object_spacing)
        room.add(None, mesh, parent.center, parent.yaw, parent.z0 + float(parent.size[2]), size, label=label, palette=palette, sid=0)
    else:
        center = np.array([rng.uniform(0.3, max(0.3, room.length - 0.3)), rng.uniform(0.3, max(0.3, room.width - 0.3))])
        room.add(None, mesh, center, 0.0, 0.0, size, label=label, palette=palette, sid=0)
