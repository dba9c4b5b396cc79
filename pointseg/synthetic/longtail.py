"""A long-tailed benchmark that 2 CPU cores can learn: 20 ScanNet200 classes in small rooms.

The full synthetic set (``generate.py``) draws all 200 classes, many of them thinner than a 5 cm
voxel or exact look-alikes, and a tail class lands in one to three training scenes; nothing is
learnable there in a CPU run. Here the question "does a method help the tail?" can be answered:

* 20 classes chosen by their ScanNet200 split (5 head, 7 common, 8 tail), every object at least
  ``min_thickness_voxels`` voxels thick along every axis at the training voxel size, each class in
  its own colour (and mostly its own shape), except ONE deliberate pair of tail look-alikes (same
  shape family, nearly the same colour, different sizes) that probes minority collapse;
* a long tail in train: each class is put into a fixed share of the train scenes (``train_share``,
  wall and floor in all of them), so center-level imbalance is ``1 / min share`` and point-level
  imbalance follows from the object sizes;
* a balanced val (and test) split: every object class in the same number of scenes;
* small rooms (about 13k vertices; coarser vertex spacing than ScanNet's 2 cm, no coarser than
  the 5 cm voxels the training uses).

Scenes are written in the raw ScanNet layout with raw-category strings, so the labels come from
the official ScanNet200 rule in ``tools/preprocess_scannet200.py``. Geometry, placement,
annotation and writing are the ones of the full synthetic set.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import asdict, dataclass

import numpy as np

from pointseg import meta
from pointseg.synthetic import catalog as cat
from pointseg.synthetic import generate, rooms
from pointseg.synthetic.generate import ScenePlan, SyntheticScene

ROOM_TYPE = "living_room"  # scene-type line of the .txt files; no room semantics here


@dataclass(frozen=True)
class BenchmarkClass:
    """One class of the benchmark; ``name`` is its ScanNet200 name (the split comes from meta)."""

    name: str
    family: str  # shapes.FAMILIES name, or "structure" for wall / floor
    lo: tuple[float, float, float]  # size (width, depth, height) in metres
    hi: tuple[float, float, float]
    place: str  # structure | against_wall | free (rooms.place kinds)
    color: tuple[int, int, int]
    train_share: float  # share of train scenes that contain the class
    max_instances: int = 1  # in a train scene


# Colours are picked so that every pair of classes differs by >= 65 in RGB except the look-alike
# pair (tests/test_longtail.py checks it); sizes keep every side >= 16 cm (3 voxels of 5 cm and a
# margin). Shares and extra instances make the long tail: wall and floor in every train scene, the
# rarest class (stuffed animal) in 4.7 % of them (a 21-fold center imbalance) with about 1/1000 of
# the wall's points. Within the tail the point counts still span a factor of ten, so that a
# cross-entropy baseline of a few CPU minutes learns the larger tail classes and loses the rarest
# ones (measured with configs/longtail/baseline.yaml).
# fmt: off
CLASSES: tuple[BenchmarkClass, ...] = (
    # head
    BenchmarkClass("wall", "structure", (1, 1, 1), (1, 1, 1), "structure", (222, 220, 212), 1.0),
    BenchmarkClass("floor", "structure", (1, 1, 1), (1, 1, 1), "structure", (138, 98, 62), 1.0),
    BenchmarkClass("cabinet", "box", (0.5, 0.4, 0.6), (1.0, 0.55, 0.9), "against_wall", (50, 100, 140), 0.6, 2),
    BenchmarkClass("couch", "sofa", (1.6, 0.8, 0.75), (2.2, 0.95, 0.9), "against_wall", (160, 35, 50), 0.45),
    BenchmarkClass("refrigerator", "box", (0.6, 0.6, 1.5), (0.8, 0.72, 1.8), "against_wall", (120, 125, 135), 0.4),
    # common
    BenchmarkClass("ottoman", "box", (0.4, 0.4, 0.35), (0.6, 0.6, 0.45), "free", (235, 145, 35), 0.3, 2),
    BenchmarkClass("bin", "disk", (0.28, 0.28, 0.4), (0.4, 0.4, 0.6), "free", (35, 170, 165), 0.25),
    BenchmarkClass("computer tower", "box", (0.18, 0.4, 0.38), (0.22, 0.5, 0.48), "free", (30, 30, 35), 0.2),
    BenchmarkClass("mini fridge", "box", (0.45, 0.45, 0.55), (0.55, 0.55, 0.85), "against_wall", (150, 210, 250), 0.16),
    BenchmarkClass("bag", "soft", (0.35, 0.25, 0.35), (0.5, 0.35, 0.5), "free", (125, 55, 175), 0.15, 2),
    BenchmarkClass("potted plant", "plant", (0.35, 0.35, 0.6), (0.6, 0.6, 1.2), "free", (60, 145, 45), 0.11),
    BenchmarkClass("person", "person", (0.45, 0.3, 1.55), (0.55, 0.35, 1.85), "free", (215, 170, 130), 0.09),
    # tail
    BenchmarkClass("bucket", "disk", (0.26, 0.26, 0.26), (0.32, 0.32, 0.36), "free", (35, 80, 225), 0.1, 3),
    BenchmarkClass("ball", "soft", (0.2, 0.2, 0.2), (0.3, 0.3, 0.3), "free", (240, 220, 30), 0.06, 3),
    BenchmarkClass("speaker", "box", (0.18, 0.18, 0.3), (0.25, 0.25, 0.45), "against_wall", (90, 20, 90), 0.08, 2),
    BenchmarkClass("crate", "box", (0.35, 0.3, 0.3), (0.5, 0.4, 0.4), "free", (175, 200, 70), 0.09, 2),
    BenchmarkClass("fire extinguisher", "disk", (0.17, 0.17, 0.45), (0.2, 0.2, 0.6), "against_wall", (230, 30, 30), 0.07, 2),
    BenchmarkClass("stuffed animal", "soft", (0.25, 0.2, 0.2), (0.35, 0.3, 0.3), "free", (245, 140, 200), 0.047),
    # the look-alike pair: same family, nearly the same colour; only the size tells them apart
    BenchmarkClass("toaster", "box", (0.2, 0.16, 0.16), (0.26, 0.2, 0.2), "free", (100, 200, 130), 0.05),
    BenchmarkClass("toaster oven", "box", (0.38, 0.3, 0.22), (0.46, 0.36, 0.28), "free", (110, 195, 140), 0.055),
)
# fmt: on
LOOKALIKE_PAIR = ("toaster", "toaster oven")
STRUCTURE_CLASSES = tuple(c.name for c in CLASSES if c.family == "structure")  # built with the room
PLACE_ORDER = {"against_wall": 0, "free": 1}  # big furniture at the walls first


@dataclass(frozen=True)
class BenchmarkConfig:
    """Knobs of the benchmark that are not per class."""

    voxel_size: float = 0.05  # training voxel size (configs/longtail/_base_.yaml)
    min_thickness_voxels: int = 3  # every object spans at least this many voxels along each axis
    object_spacing: float = 0.05  # metres between mesh vertices on objects
    structure_spacing: float = 0.05  # ... on walls and floors
    room_side: tuple[float, float] = (2.4, 3.4)  # metres, each side drawn uniformly
    wall_height: tuple[float, float] = (1.2, 1.8)  # scanned height of the walls
    walls: tuple[int, ...] = (2, 3)  # number of walls, drawn uniformly (adjacent ones)
    eval_share: float = 0.25  # share of val (and test) scenes holding each object class
    extra_instance_prob: float = 0.35  # per extra instance of a class with max_instances > 1
    outside_objects: int = 1  # at most this many objects of non-ScanNet200 raw categories
    # (class name, lo, hi): size ranges that replace those of CLASSES, e.g. to shrink the large
    # head objects that, with the floor and walls, hold most of a scene's voxels
    resize: tuple[tuple[str, tuple[float, float, float], tuple[float, float, float]], ...] = ()

    def __post_init__(self) -> None:
        if self.min_thickness_voxels < 1 or self.voxel_size <= 0:
            raise ValueError("min_thickness_voxels must be >= 1 and voxel_size > 0")
        if not 0 < self.eval_share <= 1:
            raise ValueError(f"eval_share must be in (0, 1], got {self.eval_share}")
        unknown = {name for name, _, _ in self.resize} - {c.name for c in CLASSES}
        if unknown:
            raise ValueError(f"resize names classes that are not in the benchmark: {sorted(unknown)}")


DEFAULT_SCENES = {"train": 150, "val": 60, "test": 10}
# Named sizes of the rooms. "v1": the rooms of the first study (docs/study.md); "compact": the
# same classes, objects and splits in smaller rooms with two lower walls, 1.6x fewer 5 cm voxels
# per scene (6.7 k against 10.3 k); only walls and floor shrink, every object keeps its size
# range. "small": the second study's benchmark after its first pilot (docs/study.md): CE had not
# converged after 3000 iterations on "compact", and twice that schedule with enough seeds does not
# fit the budget, so the rooms shrink again and the three large head objects (couch, refrigerator,
# cabinet: with floor and walls 90 % of a compact scene's points) become smaller ones of the same
# shape. Which scenes hold which classes is unchanged, so the center-level long tail is the same;
# the common and tail objects keep their sizes.
PRESETS: dict[str, BenchmarkConfig] = {
    "v1": BenchmarkConfig(),
    "compact": BenchmarkConfig(room_side=(2.0, 2.6), wall_height=(0.8, 1.1), walls=(2,)),
    "small": BenchmarkConfig(
        room_side=(1.4, 1.8), wall_height=(0.5, 0.7), walls=(2,),
        resize=(
            ("couch", (1.0, 0.6, 0.5), (1.3, 0.7, 0.6)),
            ("refrigerator", (0.5, 0.5, 0.9), (0.6, 0.6, 1.1)),
            ("cabinet", (0.4, 0.3, 0.4), (0.6, 0.4, 0.6)),
        ),
    ),
}


@functools.cache
def benchmark_specs(config: BenchmarkConfig = BenchmarkConfig()) -> tuple[cat.ClassSpec, ...]:
    """The classes as generator specs, after checking that each is thick enough.

    Raises ``ValueError`` naming the class whose smallest side is below
    ``min_thickness_voxels * voxel_size``.
    """
    table = meta.class_table()
    index = {n: i for i, n in enumerate(table.name)}
    full = cat.class_by_name()
    min_side = min_side_metres(config)
    resized = {name: (lo, hi) for name, lo, hi in config.resize}
    specs = []
    for c in CLASSES:
        if c.name in resized:
            c = dataclasses.replace(c, lo=resized[c.name][0], hi=resized[c.name][1])
        if c.name not in index:
            raise ValueError(f"longtail: {c.name!r} is not a ScanNet200 class")
        if c.family != "structure" and min(c.lo) < min_side - 1e-9:
            raise ValueError(
                f"longtail: class {c.name!r} has a side of {min(c.lo):.3f} m, below "
                f"{config.min_thickness_voxels} voxels of {config.voxel_size} m"
            )
        i = index[c.name]
        specs.append(
            cat.ClassSpec(
                index=i, scannet_id=int(table.scannet_id[i]), name=c.name, split=table.split[i],
                family=c.family, size_lo=np.array(c.lo, float), size_hi=np.array(c.hi, float),
                place=c.place, rooms=(ROOM_TYPE,), support=False, z=(0.0, 0.0),
                palette=np.array([c.color], np.uint8), weight=c.train_share,
                raw_names=full[c.name].raw_names,
            )
        )
    return tuple(specs)


def class_indices() -> np.ndarray:
    """ScanNet200 indices (0..199) of the benchmark classes, in ``CLASSES`` order."""
    return np.array([s.index for s in benchmark_specs()], np.int64)


def scene_counts(n_scenes: int, split: str, config: BenchmarkConfig = BenchmarkConfig()) -> np.ndarray:
    """How many scenes of a split of ``n_scenes`` hold each class (``CLASSES`` order).

    Train: ``train_share`` of the scenes (at least one). Val and test are balanced: every object
    class in ``eval_share`` of the scenes; wall and floor are in every scene of every split.
    """
    shares = np.array([c.train_share if split == "train" else config.eval_share for c in CLASSES])
    shares[[c.family == "structure" for c in CLASSES]] = 1.0
    return np.minimum(n_scenes, np.maximum(1, np.rint(shares * n_scenes))).astype(np.int64) if n_scenes else np.zeros(len(CLASSES), np.int64)


def _assign(counts: np.ndarray, n_scenes: int, rng: np.random.Generator) -> list[list[int]]:
    """Positions (into CLASSES) per scene: class k goes to ``counts[k]`` distinct scenes, the least
    loaded first (ties broken at random), so objects spread evenly over the scenes."""
    scenes: list[list[int]] = [[] for _ in range(n_scenes)]
    load = np.zeros(n_scenes, np.int64)
    for k in np.argsort(-counts, kind="stable"):
        if CLASSES[k].family == "structure":
            continue
        order = np.lexsort((rng.permutation(n_scenes), load))
        for s in order[: counts[k]]:
            scenes[s].append(int(k))
            load[s] += 1
    return scenes


def plan_longtail(
    train: int, val: int, test: int, seed: int = 0, config: BenchmarkConfig = BenchmarkConfig()
) -> list[ScenePlan]:
    """Scene ids, splits and the objects of every scene (ScanNet200 class indices, one entry per
    instance; wall and floor are built with the room and not listed)."""
    specs = benchmark_specs(config)  # its thickness check fails before anything is written
    for name, n in (("train", train), ("val", val), ("test", test)):
        if n < 0:
            raise ValueError(f"number of {name} scenes must be >= 0, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(generate.PLAN_KEY,)))
    plans: list[ScenePlan] = []
    for split, n in (("train", train), ("val", val), ("test", test)):
        for objects in _assign(scene_counts(n, split, config), n, rng):
            entries: list[int] = []
            for k in objects:
                extra = 0
                if split == "train":
                    while extra + 1 < CLASSES[k].max_instances and rng.random() < config.extra_instance_prob:
                        extra += 1
                entries += [specs[k].index] * (1 + extra)
            i = len(plans)
            plans.append(ScenePlan(i, f"scene{i:04d}_00", split, ROOM_TYPE, tuple(sorted(entries))))
    return plans


def _make_room(rng: np.random.Generator, config: BenchmarkConfig) -> rooms.Room:
    n_walls = int(rng.choice(config.walls))
    first = int(rng.integers(4))
    return rooms.Room(
        length=float(rng.uniform(*config.room_side)),
        width=float(rng.uniform(*config.room_side)),
        height=float(rng.uniform(*config.wall_height)),
        ceiling=False,
        walls=sorted((first + k) % 4 for k in range(n_walls)),
        room_type=ROOM_TYPE,
        rng=rng,
        object_spacing=config.object_spacing,
        structure_spacing=config.structure_spacing,
    )


def build_longtail_scene(plan: ScenePlan, seed: int, config: BenchmarkConfig = BenchmarkConfig()) -> SyntheticScene:
    """One scene: a small room (its size from ``config``), the planned objects (no context
    objects) and up to ``config.outside_objects`` objects of raw categories outside the 200
    (ignored by the rule)."""
    rng = generate.scene_rng(seed, plan.index)
    by_index = {s.index: s for s in benchmark_specs(config)}
    room = _make_room(rng, config)
    rooms.build_structure(room, {s.name: s for s in by_index.values() if s.family == "structure"})
    objects = sorted((by_index[i] for i in plan.forced), key=lambda s: (PLACE_ORDER[s.place], -float(np.prod(s.size_hi[:2]))))
    for spec in objects:
        rooms.place(room, spec, force=True, context=False)
    outside = cat.outside_raw_categories()
    for _ in range(int(rng.integers(0, config.outside_objects + 1))):
        rooms.add_outside_object(room, outside[int(rng.integers(len(outside)))])
    return generate.assemble(plan, room, rng)


def generate_longtail(
    out: str | os.PathLike,
    train: int = DEFAULT_SCENES["train"],
    val: int = DEFAULT_SCENES["val"],
    test: int = DEFAULT_SCENES["test"],
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    config: BenchmarkConfig = BenchmarkConfig(),
) -> dict:
    """Write the benchmark to ``out`` in the raw ScanNet layout and return its summary (also in
    ``out/synthetic_summary.json``). The summary's counts are the generator's own bookkeeping;
    the preprocessed labels (``tools/imbalance.py``) are the reference."""
    plans = plan_longtail(train, val, test, seed, config)
    table = meta.class_table()
    header = {
        "benchmark": "longtail",
        "seed": seed,
        "config": asdict(config),
        "scenes": {"train": train, "val": val, "test": test},
        "classes": [
            {"index": int(i), "name": table.name[i], "split": table.split[i]} for i in class_indices()
        ],
        "lookalike_pair": list(LOOKALIKE_PAIR),
    }
    build = functools.partial(build_longtail_scene, config=config)
    return generate.write_release(out, plans, seed, workers, progress, build, header)


def min_side_metres(config: BenchmarkConfig = BenchmarkConfig()) -> float:
    """The thickness every object must reach: ``min_thickness_voxels`` voxels."""
    return config.min_thickness_voxels * config.voxel_size


__all__ = [
    "BenchmarkClass", "BenchmarkConfig", "CLASSES", "DEFAULT_SCENES", "LOOKALIKE_PAIR", "PRESETS",
    "benchmark_specs", "build_longtail_scene", "class_indices", "generate_longtail",
    "min_side_metres", "plan_longtail", "scene_counts",
]
