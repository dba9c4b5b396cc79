"""The synthetic catalogue: one entry per ScanNet200 class, built semi-automatically.

Hand-written are only the grouped ``RULES`` (which classes share a shape family, a size range, a
placement kind and the rooms they live in), the ``LOOKALIKES`` (tail classes made deliberately
similar in shape and colour, so that minority collapse can occur) and the palette materials.
Everything per class that need not be designed (palette choice, size jitter, frequency jitter)
comes from a hash of the class name, so the catalogue is stable across runs and machines.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from pointseg import meta

# Room types and the one-letter codes used in RULES.
ROOM_CODES = {
    "B": "bedroom",
    "O": "office",
    "K": "kitchen",
    "T": "bathroom",
    "L": "living_room",
    "C": "classroom",
    "S": "storage",
    "W": "laundry",
}
ROOM_TYPES = tuple(ROOM_CODES.values())

# Relative scene frequency of a class by ScanNet200 split: the long tail is built in here.
TIER_WEIGHT = {"head": 1.0, "common": 0.2, "tail": 0.025}


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    family: str  # shape builder name in shapes.FAMILIES
    lo: tuple[float, float, float]  # size (width x, depth y, height z) in metres, lower bound
    hi: tuple[float, float, float]
    # Placement kind (see rooms.py): structure (wall/floor/ceiling, built with the room), door and
    # window (cut into a wall), companion (only next to its parent), against_wall / free (floor),
    # wall (mounted at a height), surface (on a support), ceiling.
    place: str
    rooms: str  # room codes, "*" = every room
    support: bool = False  # other objects may stand on its top
    z: tuple[float, float] = (1.0, 1.6)  # bottom height range of wall / surface-free mounts
    materials: tuple[str, ...] = ()  # palette materials; empty = hashed choice


A = "BOKTLCSW"
# fmt: off
RULES: tuple[Rule, ...] = (
    # structure and openings
    Rule(("wall",), "structure", (1, 1, 1), (1, 1, 1), "structure", A, materials=("white", "beige", "light grey")),
    Rule(("floor",), "structure", (1, 1, 1), (1, 1, 1), "structure", A, materials=("wood", "grey", "beige", "dark wood")),
    Rule(("ceiling",), "structure", (1, 1, 1), (1, 1, 1), "structure", A, materials=("white", "light grey")),
    Rule(("door",), "panel", (0.8, 0.04, 1.95), (0.95, 0.06, 2.1), "door", A, materials=("wood", "white", "dark wood")),
    Rule(("window",), "panel", (0.6, 0.05, 0.8), (1.6, 0.08, 1.4), "window", A, materials=("light blue", "light grey")),
    Rule(("doorframe",), "frame", (0.9, 0.1, 2.1), (1.05, 0.14, 2.2), "companion", A, materials=("white", "wood")),
    Rule(("windowsill",), "box", (0.7, 0.12, 0.03), (1.7, 0.2, 0.05), "companion", A, materials=("white", "beige")),
    Rule(("blinds", "curtain"), "panel", (0.7, 0.03, 1.0), (1.8, 0.06, 1.6), "companion", "BOLKC"),
    Rule(("closet door", "bathroom stall door", "shower door"), "panel", (0.7, 0.03, 1.8), (1.2, 0.05, 2.1), "against_wall", "BTS"),
    Rule(("shower wall", "closet wall"), "panel", (0.9, 0.05, 1.9), (1.6, 0.08, 2.3), "against_wall", "TBS"),
    Rule(("shower curtain",), "panel", (0.8, 0.02, 1.6), (1.4, 0.04, 1.9), "companion", "T"),
    Rule(("shower floor", "mat"), "box", (0.6, 0.5, 0.02), (1.1, 1.0, 0.04), "free", "TBKL"),
    Rule(("stairs",), "stairs", (0.8, 1.2, 1.0), (1.1, 2.0, 1.6), "against_wall", "LS"),
    Rule(("column", "pillar", "structure"), "column", (0.25, 0.25, 2.0), (0.45, 0.45, 2.4), "free", "CLSO"),
    Rule(("bathroom stall", "shower"), "stall", (0.9, 0.9, 1.8), (1.2, 1.2, 2.1), "against_wall", "T"),
    Rule(("rail", "stair rail", "handicap bar", "bar", "shower curtain rod", "closet rod"), "rod", (0.6, 0.04, 0.04), (1.4, 0.05, 0.05), "wall", "TLSB", z=(0.8, 1.9)),
    Rule(("pipe",), "rod", (1.0, 0.06, 0.06), (2.5, 0.12, 0.12), "ceiling", "SWK"),
    Rule(("ledge",), "box", (0.8, 0.12, 0.04), (2.0, 0.25, 0.08), "wall", "LCOS", z=(0.8, 1.3)),
    Rule(("radiator",), "box", (0.6, 0.08, 0.5), (1.2, 0.12, 0.7), "against_wall", "BOLC", materials=("white", "light grey")),
    Rule(("vent",), "panel", (0.2, 0.02, 0.15), (0.5, 0.03, 0.3), "ceiling", "OCTKS"),
    Rule(("light switch", "power outlet"), "panel", (0.07, 0.015, 0.1), (0.09, 0.02, 0.12), "wall", A, z=(0.3, 1.2), materials=("white",)),
    Rule(("fire alarm", "ceiling light"), "disk", (0.12, 0.12, 0.04), (0.6, 0.6, 0.08), "ceiling", "OCKLBT", materials=("white",)),
    Rule(("light",), "disk", (0.2, 0.2, 0.1), (0.5, 0.5, 0.2), "ceiling", "OCSLW"),
    # big furniture against walls
    Rule(("cabinet", "kitchen cabinet", "file cabinet", "bathroom cabinet", "bathroom vanity"), "box", (0.4, 0.35, 0.6), (1.4, 0.6, 1.0), "against_wall", "KOTSLW", support=True),
    Rule(("dresser", "nightstand", "tv stand", "stand"), "box", (0.4, 0.35, 0.45), (1.4, 0.55, 0.9), "against_wall", "BL", support=True, materials=("wood", "dark wood", "white")),
    Rule(("counter", "kitchen counter", "bathroom counter"), "box", (1.0, 0.55, 0.85), (2.4, 0.65, 0.95), "against_wall", "KT", support=True),
    Rule(("wardrobe", "closet", "furniture"), "box", (0.8, 0.5, 1.7), (1.6, 0.65, 2.1), "against_wall", "BS"),
    Rule(("refrigerator", "washing machine", "clothes dryer", "dishwasher", "oven", "stove", "mini fridge", "machine"), "box", (0.55, 0.55, 0.8), (0.9, 0.7, 1.8), "against_wall", "KW", materials=("white", "metal", "black")),
    Rule(("copier", "water cooler", "piano", "fireplace", "mailbox"), "box", (0.35, 0.35, 0.9), (1.5, 0.7, 1.4), "against_wall", "OLC"),
    Rule(("range hood",), "box", (0.6, 0.45, 0.3), (0.9, 0.55, 0.5), "wall", "K", z=(1.5, 1.7), materials=("metal", "white")),
    Rule(("bookshelf", "shelf", "rack", "storage organizer"), "shelf", (0.6, 0.3, 0.9), (1.4, 0.45, 2.0), "against_wall", "OLSCB", support=True),
    Rule(("couch",), "sofa", (1.6, 0.8, 0.75), (2.4, 1.0, 0.9), "against_wall", "L"),
    Rule(("bed",), "bed", (1.0, 1.9, 0.5), (1.8, 2.1, 0.6), "against_wall", "B"),
    Rule(("mattress",), "box", (0.9, 1.9, 0.15), (1.6, 2.0, 0.25), "free", "BS", support=True),
    Rule(("whiteboard", "blackboard", "board", "bulletin board", "projector screen"), "panel", (0.9, 0.02, 0.6), (2.4, 0.04, 1.3), "wall", "COS", z=(0.8, 1.1)),
    Rule(("tv",), "panel", (0.8, 0.06, 0.5), (1.4, 0.1, 0.8), "surface", "LB", materials=("black",)),
    Rule(("picture", "mirror", "decoration"), "panel", (0.3, 0.02, 0.3), (1.0, 0.04, 0.9), "wall", "BLOTK", z=(1.1, 1.6)),
    Rule(("poster", "calendar", "sign"), "panel", (0.3, 0.01, 0.4), (0.45, 0.015, 0.6), "wall", "OCLB", z=(1.2, 1.6)),
    Rule(("clock",), "disk", (0.25, 0.25, 0.05), (0.35, 0.35, 0.06), "wall", "OCKL", z=(1.7, 2.0)),
    Rule(("alarm clock",), "disk", (0.25, 0.25, 0.05), (0.35, 0.35, 0.06), "surface", "B"),
    Rule(("paper towel dispenser", "toilet paper dispenser", "toilet seat cover dispenser", "toilet paper holder", "soap dispenser"), "box", (0.16, 0.1, 0.2), (0.3, 0.14, 0.36), "wall", "T", z=(0.7, 1.2), materials=("white", "light grey")),
    Rule(("fire extinguisher",), "cylinder", (0.14, 0.14, 0.45), (0.18, 0.18, 0.6), "against_wall", "OCKS", materials=("red",)),
    Rule(("shower head",), "cylinder", (0.08, 0.08, 0.1), (0.14, 0.14, 0.14), "wall", "T", z=(1.8, 2.0), materials=("metal",)),
    Rule(("towel", "jacket", "hat"), "panel", (0.3, 0.04, 0.4), (0.6, 0.08, 0.8), "wall", "TBW", z=(0.9, 1.4)),
    Rule(("speaker",), "box", (0.15, 0.15, 0.2), (0.3, 0.25, 0.45), "surface", "LOB", materials=("black",)),
    # tables and seats
    Rule(("table", "dining table", "desk"), "table", (0.8, 0.6, 0.72), (1.8, 1.0, 0.78), "free", "OKLC", support=True),
    Rule(("coffee table", "end table"), "table", (0.45, 0.45, 0.4), (1.2, 0.7, 0.55), "free", "L", support=True),
    Rule(("keyboard piano", "ironing board", "music stand", "paper cutter"), "table", (0.4, 0.3, 0.8), (1.3, 0.45, 0.95), "free", "LWC"),
    Rule(("chair", "office chair", "folded chair", "seat"), "chair", (0.42, 0.42, 0.8), (0.55, 0.55, 1.05), "free", "OKLCB"),
    Rule(("armchair", "sofa chair"), "sofa", (0.7, 0.7, 0.75), (0.95, 0.9, 0.95), "free", "LB"),
    Rule(("stool", "ottoman", "bench"), "stool", (0.35, 0.35, 0.4), (1.4, 0.45, 0.55), "free", "KLB"),
    # bathroom fixtures
    Rule(("toilet",), "toilet", (0.38, 0.65, 0.75), (0.42, 0.75, 0.85), "against_wall", "T", materials=("white",)),
    Rule(("sink",), "box", (0.45, 0.4, 0.15), (0.65, 0.5, 0.22), "surface", "TK", materials=("white", "metal")),
    Rule(("bathtub",), "tub", (1.5, 0.7, 0.5), (1.7, 0.8, 0.6), "against_wall", "T", materials=("white",)),
    # containers on the floor
    Rule(("trash can", "trash bin", "recycling bin", "bin", "bucket", "laundry hamper", "laundry basket", "basket"), "cylinder", (0.25, 0.25, 0.3), (0.45, 0.45, 0.7), "free", A),
    Rule(("box", "crate", "storage bin", "storage container", "container", "case of water bottles"), "box", (0.25, 0.2, 0.18), (0.6, 0.45, 0.45), "free", "SOBWL", support=True),
    Rule(("suitcase", "luggage", "guitar case", "guitar"), "case", (0.35, 0.15, 0.55), (0.45, 0.25, 1.0), "against_wall", "BSL"),
    Rule(("bag", "backpack", "purse", "paper bag"), "soft", (0.25, 0.15, 0.3), (0.45, 0.3, 0.5), "free", "BOLC"),
    Rule(("shoe", "dumbbell", "ball", "scale"), "soft", (0.15, 0.1, 0.08), (0.32, 0.25, 0.2), "free", "BLST"),
    Rule(("plant", "potted plant"), "plant", (0.3, 0.3, 0.5), (0.6, 0.6, 1.3), "free", "LOBK", materials=("green", "dark green")),
    Rule(("person",), "person", (0.45, 0.3, 1.55), (0.55, 0.35, 1.85), "free", "OCLK"),
    Rule(("lamp", "coat rack", "fan"), "lamp", (0.3, 0.3, 0.4), (0.5, 0.5, 1.7), "free", "BLO"),
    Rule(("bicycle", "ladder", "vacuum cleaner", "cart", "broom", "dustpan", "plunger"), "pole", (0.1, 0.1, 0.5), (0.6, 0.4, 1.7), "against_wall", "SWT"),
    Rule(("divider",), "panel", (1.0, 0.04, 1.2), (1.8, 0.06, 1.7), "free", "OC"),
    Rule(("computer tower",), "box", (0.18, 0.4, 0.38), (0.22, 0.5, 0.48), "free", "O", materials=("black", "grey")),
    # soft things on beds and seats
    Rule(("pillow", "cushion", "stuffed animal"), "soft", (0.35, 0.3, 0.1), (0.7, 0.45, 0.2), "surface", "BL"),
    Rule(("blanket", "clothes"), "soft", (0.6, 0.5, 0.06), (1.4, 1.0, 0.12), "surface", "BW"),
    # small objects on supports
    Rule(("monitor",), "monitor", (0.45, 0.18, 0.32), (0.7, 0.22, 0.5), "surface", "OC", materials=("black",)),
    Rule(("keyboard", "laptop", "paper", "book", "cd case", "tissue box", "mouse", "power strip"), "box", (0.08, 0.08, 0.02), (0.45, 0.3, 0.06), "surface", "OCLB"),
    Rule(("printer", "microwave", "toaster", "toaster oven", "coffee maker", "projector", "telephone", "dish rack"), "box", (0.2, 0.2, 0.15), (0.55, 0.45, 0.35), "surface", "KO"),
    Rule(("bottle", "water bottle", "water pitcher", "cup", "candle", "paper towel roll", "tube", "toilet paper", "laundry detergent", "coffee kettle", "hair dryer", "headphones"), "cylinder", (0.06, 0.06, 0.1), (0.12, 0.12, 0.3), "surface", "KTOBW"),
    Rule(("bowl", "plate", "tray", "soap dish"), "disk", (0.15, 0.15, 0.03), (0.35, 0.3, 0.06), "surface", "KL"),
    Rule(("object",), "box", (0.08, 0.08, 0.08), (0.4, 0.4, 0.4), "surface", A),
)
# fmt: on

# Tail classes made deliberately alike: each group shares family, size range and palette.
LOOKALIKES: tuple[tuple[str, ...], ...] = (
    ("toilet paper dispenser", "toilet seat cover dispenser", "toilet paper holder", "soap dispenser"),
    ("clock", "alarm clock"),
    ("water bottle", "water pitcher"),
    ("toaster", "toaster oven"),
    ("light switch", "power outlet"),
    ("guitar", "guitar case"),
    ("plate", "tray"),
    ("poster", "calendar", "sign"),
    ("paper towel roll", "tube"),
    ("shower curtain rod", "handicap bar", "bar"),
    ("cd case", "tissue box"),
)

MATERIALS: dict[str, tuple[int, int, int]] = {
    "white": (226, 224, 218), "light grey": (185, 185, 182), "grey": (128, 128, 126),
    "black": (42, 42, 45), "metal": (165, 168, 172), "wood": (160, 118, 76),
    "dark wood": (92, 64, 42), "beige": (206, 190, 160), "light blue": (170, 200, 225),
    "red": (190, 40, 35), "green": (70, 140, 60), "dark green": (40, 90, 40),
}
_HASHED_MATERIALS = ("white", "light grey", "grey", "black", "metal", "wood", "dark wood", "beige")

# Context: (parent, child, probability, relation). Relations: on (child on the parent's top),
# beside (on the floor next to it), front (on the floor in front of it), above (on the wall above
# it), window (dressing a window), door (framing a door).
CONTEXT: tuple[tuple[str, str, float, str], ...] = (
    ("bed", "pillow", 0.95, "on"), ("bed", "pillow", 0.6, "on"), ("bed", "blanket", 0.5, "on"),
    ("bed", "stuffed animal", 0.1, "on"), ("bed", "nightstand", 0.7, "beside"),
    ("bed", "clothes", 0.15, "on"), ("nightstand", "lamp", 0.5, "on"),
    ("nightstand", "alarm clock", 0.08, "on"), ("couch", "cushion", 0.8, "on"),
    ("couch", "coffee table", 0.6, "front"), ("couch", "picture", 0.5, "above"),
    ("armchair", "cushion", 0.3, "on"), ("desk", "monitor", 0.8, "on"), ("desk", "keyboard", 0.75, "on"),
    ("desk", "mouse", 0.2, "on"), ("desk", "office chair", 0.8, "front"),
    ("desk", "computer tower", 0.3, "beside"), ("desk", "laptop", 0.2, "on"),
    ("desk", "paper", 0.3, "on"), ("desk", "lamp", 0.15, "on"), ("desk", "headphones", 0.05, "on"),
    ("dining table", "chair", 0.9, "front"), ("dining table", "chair", 0.8, "front"),
    ("dining table", "plate", 0.06, "on"), ("dining table", "bowl", 0.06, "on"),
    ("table", "chair", 0.7, "front"), ("table", "cup", 0.08, "on"),
    ("toilet", "toilet paper", 0.7, "beside"), ("toilet", "toilet paper holder", 0.06, "above"),
    ("toilet", "toilet paper dispenser", 0.06, "above"), ("toilet", "plunger", 0.05, "beside"),
    ("toilet", "trash can", 0.3, "beside"), ("toilet", "handicap bar", 0.05, "above"),
    ("bathroom vanity", "sink", 0.9, "on"), ("bathroom counter", "sink", 0.8, "on"),
    ("sink", "soap dispenser", 0.08, "above"), ("sink", "mirror", 0.6, "above"),
    ("bathroom vanity", "soap dish", 0.06, "on"), ("bathtub", "shower curtain", 0.6, "above"),
    ("bathtub", "shower curtain rod", 0.08, "above"), ("bathtub", "shower head", 0.1, "above"),
    ("shower", "shower head", 0.1, "above"), ("shower", "shower floor", 0.1, "front"),
    ("kitchen counter", "sink", 0.5, "on"), ("kitchen counter", "microwave", 0.4, "on"),
    ("kitchen counter", "coffee maker", 0.2, "on"), ("kitchen counter", "toaster", 0.05, "on"),
    ("kitchen counter", "dish rack", 0.15, "on"), ("kitchen counter", "coffee kettle", 0.05, "on"),
    ("kitchen counter", "paper towel roll", 0.05, "on"), ("stove", "range hood", 0.3, "above"),
    ("counter", "microwave", 0.2, "on"), ("counter", "toaster oven", 0.05, "on"),
    ("bookshelf", "book", 0.95, "on"), ("bookshelf", "book", 0.8, "on"), ("shelf", "book", 0.6, "on"),
    ("shelf", "box", 0.3, "on"), ("tv stand", "tv", 0.85, "on"), ("tv stand", "speaker", 0.1, "on"),
    ("washing machine", "laundry detergent", 0.1, "on"), ("washing machine", "laundry basket", 0.3, "beside"),
    ("whiteboard", "projector screen", 0.1, "above"), ("door", "doorframe", 0.5, "door"),
    ("door", "light switch", 0.06, "above"), ("window", "curtain", 0.35, "window"),
    ("window", "blinds", 0.3, "window"), ("window", "windowsill", 0.4, "window"),
    ("window", "radiator", 0.25, "beside"), ("closet", "closet rod", 0.05, "above"),
    ("closet", "closet door", 0.3, "beside"), ("guitar", "music stand", 0.2, "beside"),
)


@dataclass(frozen=True)
class ClassSpec:
    """Everything the generator needs to draw one class."""

    index: int
    scannet_id: int
    name: str
    split: str
    family: str
    size_lo: np.ndarray  # float64 (3,)
    size_hi: np.ndarray
    place: str
    rooms: tuple[str, ...]
    support: bool
    z: tuple[float, float]
    palette: np.ndarray  # uint8 (k, 3)
    weight: float  # relative sampling frequency in its rooms
    raw_names: tuple[str, ...]  # raw category strings that the official rule maps back to this class


def name_hash(name: str, salt: str = "") -> np.random.Generator:
    """A generator seeded by a stable hash of ``name`` (Python's ``hash`` is salted per process)."""
    return np.random.default_rng(zlib.crc32(f"{salt}:{name}".encode()))


def palette_of(name: str, materials: tuple[str, ...]) -> np.ndarray:
    """Palette (k, 3) of a class: its materials, or two hashed materials and a hashed accent."""
    rng = name_hash(name, "palette")
    if not materials:
        picks = rng.choice(len(_HASHED_MATERIALS), size=2, replace=False)
        base = [MATERIALS[_HASHED_MATERIALS[i]] for i in picks]
        hue = rng.uniform(0, 1)
        # one saturated accent colour per class: the hashed hue keeps classes apart
        rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
        base.append(tuple((60 + 150 * rgb).astype(int)))
        return np.array(base, dtype=np.uint8)
    return np.array([MATERIALS[m] for m in materials], dtype=np.uint8)


def _rule_of(name: str) -> Rule:
    for rule in RULES:
        if name in rule.names:
            return rule
    raise KeyError(f"synthetic catalogue: no rule for class {name!r}; add it to RULES")


def _rooms(code: str) -> tuple[str, ...]:
    return tuple(ROOM_CODES[c] for c in code)


@functools.cache
def catalog() -> tuple[ClassSpec, ...]:
    """The 200 class specs, in class-index order."""
    table = meta.class_table()
    raw_of = meta.raw_categories_of_class()
    raw_table = meta.raw_category_table()
    leader = {n: group[0] for group in LOOKALIKES for n in group}
    specs = []
    for i, (sid, name, split) in enumerate(zip(table.scannet_id.tolist(), table.name, table.split)):
        rule = _rule_of(name)
        look = leader.get(name, name)  # lookalikes take the leader's rule, palette and sizes
        lrule = _rule_of(look)
        jitter = name_hash(look, "size").uniform(0.85, 1.15, size=3) if lrule.family != "structure" else 1.0
        raw = tuple(r for r in raw_of.get(sid, ()) if raw_table[r] == sid)
        if not raw:
            raise ValueError(f"tables: no raw category maps to ScanNet200 class {name!r} ({sid})")
        specs.append(
            ClassSpec(
                index=i,
                scannet_id=sid,
                name=name,
                split=split,
                family=lrule.family,
                size_lo=np.array(lrule.lo) * jitter,
                size_hi=np.array(lrule.hi) * jitter,
                place=rule.place,
                rooms=_rooms(rule.rooms),
                support=rule.support,
                z=rule.z,
                palette=palette_of(look, lrule.materials),
                weight=TIER_WEIGHT[split] * float(name_hash(name, "weight").uniform(0.5, 1.5)),
                raw_names=raw,
            )
        )
    return tuple(specs)


@functools.cache
def class_by_name() -> dict[str, ClassSpec]:
    return {c.name: c for c in catalog()}


@functools.cache
def outside_raw_categories() -> tuple[str, ...]:
    """Raw category strings whose ScanNet id is not one of the 200: their vertices are ignored."""
    valid = set(meta.class_table().scannet_id.tolist())
    return tuple(sorted(r for r, i in meta.raw_category_table().items() if i not in valid and r.strip()))
