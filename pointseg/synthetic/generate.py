"""Scene assembly, writing in the raw ScanNet layout, and the parallel driver.

A small global plan (room type of every scene, and for train scenes the classes each one must
contain) is drawn from the seed first; it is what guarantees that every one of the 200 classes
occurs in the train set while tail classes stay rare. Each scene is then built from its own
generator, seeded from (seed, scene index) with ``np.random.SeedSequence``, so the files do not
depend on the number of workers.
"""

from __future__ import annotations

import functools
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from pointseg import meta
from pointseg.preprocessing.raw import raw_scene_dir, write_raw_scene
from pointseg.synthetic import annotate, rooms
from pointseg.synthetic import catalog as cat
from pointseg.utils.io import atomic_write_text, load_npy, save_npy

PLAN_KEY = 2**32 - 1  # spawn key of the dataset plan, apart from the scene keys 0, 1, 2 ...
POSITION_NOISE = 0.002  # metres, per coordinate
COLOR_NOISE = 6.0  # per channel, 0..255
PATCH_CELL = 0.2  # metres; about 100 vertices per patch at 2 cm spacing
MAX_FORCED = 8
ANCHOR_SHARE = 0.75  # anchors beyond the first stop once this share of the budget is used
SCENE_TYPES = {
    "bedroom": "Bedroom / Hotel", "office": "Office", "kitchen": "Kitchen", "bathroom": "Bathroom",
    "living_room": "Living room / Lounge", "classroom": "Classroom",
    "storage": "Storage/Basement/Garage", "laundry": "Laundry Room",
}


@dataclass(frozen=True)
class ScenePlan:
    index: int
    scene_id: str
    split: str
    room_type: str
    forced: tuple[int, ...]  # class indices this scene must contain


@dataclass
class SyntheticScene:
    plan: ScenePlan
    vertices: np.ndarray  # float32 (N, 3), unaligned (as a scanner would record it)
    colors: np.ndarray  # uint8 (N, 3)
    faces: np.ndarray  # int32 (F, 3)
    seg_indices: np.ndarray  # int64 (N,)
    seg_groups: list[dict]
    ground_truth: np.ndarray  # int32 (N,) ScanNet200 id, 0 = unlabelled or not one of the 200
    axis_alignment: np.ndarray  # float64 (4, 4)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def plan_dataset(train: int, val: int, test: int, seed: int = 0) -> list[ScenePlan]:
    """Scene ids, splits, room types and the classes forced into train scenes.

    Every class except wall and floor (present in every scene) is assigned to one train scene,
    preferably of a room type where it belongs, at most ``cap`` per scene; with 25 or more train
    scenes every class therefore occurs in the train split.
    """
    for name, n in (("train", train), ("val", val), ("test", test)):
        if n < 0:
            raise ValueError(f"number of {name} scenes must be >= 0, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PLAN_KEY,)))
    splits = ["train"] * train + ["val"] * val + ["test"] * test
    types: list[str] = []
    for n in (train, val, test):
        reps = np.tile(np.arange(len(cat.ROOM_TYPES)), math.ceil(n / len(cat.ROOM_TYPES)) if n else 0)
        types += [cat.ROOM_TYPES[i] for i in rng.permutation(reps)[:n]]
    forced: list[list[int]] = [[] for _ in range(train)]
    if train:
        cap = min(MAX_FORCED, max(3, math.ceil(2 * meta.NUM_CLASSES / train)))
        specs = [c for c in cat.catalog() if c.name not in ("wall", "floor")]
        for k in rng.permutation(len(specs)):
            spec = specs[k]
            free = [i for i in range(train) if len(forced[i]) < cap]
            if not free:
                break
            home = [i for i in free if types[i] in spec.rooms]
            choice = home or free
            load = np.array([len(forced[i]) for i in choice])
            best = [choice[j] for j in np.flatnonzero(load == load.min())]
            forced[int(best[int(rng.integers(len(best)))])].append(spec.index)
    return [
        ScenePlan(i, f"scene{i:04d}_00", splits[i], types[i], tuple(sorted(forced[i])) if i < train else ())
        for i in range(len(splits))
    ]


def build_scene(plan: ScenePlan, vertices: int, seed: int) -> SyntheticScene:
    """All geometry, colours and annotation of one scene.

    ``vertices`` is a budget, not a count: it sizes the room (walls, floor and ceiling take about
    40 % of it); the door, the first anchor furniture and the classes the scene must hold are
    placed whatever the budget, and further objects, each with its context objects, are added
    until the budget is passed, so a scene ends above it.
    """
    rng = scene_rng(seed, plan.index)
    specs = cat.catalog()
    by = cat.class_by_name()
    forced = [specs[i] for i in plan.forced]
    room = rooms.make_room(rng, plan.room_type, vertices)
    if any(s.name == "ceiling" for s in forced):
        room.ceiling = True
    rooms.build_structure(room)
    if rng.random() < 0.85:
        rooms.place(room, by["door"], force=True)
    for _ in range(int(rng.choice([0, 1, 1, 2])) if room.height > 1.9 else int(rng.random() < 0.3)):
        rooms.place(room, by["window"], force=True)
    # the first anchor always gets its chance; later ones only while the budget lasts
    for k, (name, prob, count) in enumerate(rooms.ANCHORS[plan.room_type]):
        for j in range(count):
            if rng.random() < prob * (0.6**j) and (k == 0 or room.n_vertices < ANCHOR_SHARE * vertices):
                rooms.place(room, by[name])
    for spec in forced:
        if spec.place == "structure":
            continue
        if spec.place == "companion":
            rooms.place_companion(room, spec)
        else:
            rooms.place(room, spec, force=True)
    pool = rooms.room_pool(plan.room_type)
    weights = np.array([s.weight for s in pool])
    weights /= weights.sum()
    for _ in range(400):
        if room.n_vertices >= vertices:
            break
        rooms.place(room, pool[int(rng.choice(len(pool), p=weights))])
    outside = cat.outside_raw_categories()
    for _ in range(int(rng.integers(1, 4))):
        rooms.add_outside_object(room, outside[int(rng.integers(len(outside)))])
    if rng.random() < 0.5:  # an object nobody annotated
        rooms.add_outside_object(room, "unannotated")
        room.objects[-1].label = None
    return assemble(plan, room, rng)


def assemble(plan: ScenePlan, room: rooms.Room, rng: np.random.Generator) -> SyntheticScene:
    """The room's objects as one scanned, annotated mesh: vertex and colour noise, over-segment
    patches, segGroups, true labels and the scanner frame."""
    objs = room.objects
    counts = np.array([len(o.mesh) for o in objs])
    verts = np.concatenate([o.mesh.verts for o in objs])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    faces = np.concatenate([o.mesh.faces + s for o, s in zip(objs, starts)])
    object_id = np.repeat(np.arange(len(objs)), counts)
    verts = verts + rng.normal(0, POSITION_NOISE, size=verts.shape)
    colors = np.concatenate([o.colors for o in objs]) + rng.normal(0, COLOR_NOISE, size=verts.shape)
    colors = np.clip(np.rint(colors), 0, 255).astype(np.uint8)
    structure = np.array([o.scannet_id in (1, 3, 41) for o in objs])
    cell = np.where(structure[object_id], PATCH_CELL * 1.5, PATCH_CELL)
    seg = annotate.segment_patches(verts, object_id, cell, rng)
    groups, grouped = annotate.make_groups(seg, object_id, [o.label for o in objs], rng)
    sid = np.array([o.scannet_id for o in objs], dtype=np.int32)
    gt = np.where(grouped, sid[object_id], 0).astype(np.int32)
    # scanner frame: a random turn about z and a shift; axisAlignment maps it back to the room
    yaw = float(rng.uniform(-np.pi, np.pi))
    shift = np.array([rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(-0.2, 0.2)])
    rot = rooms.shapes.rot_z(yaw)
    raw_verts = verts @ rot.T + shift
    align = np.eye(4)
    align[:3, :3] = rot.T
    align[:3, 3] = -rot.T @ shift
    return SyntheticScene(plan, raw_verts.astype(np.float32), colors, faces.astype(np.int32), seg, groups, gt, align)


def write_scene(raw: Path, scene: SyntheticScene) -> None:
    """The scene in the raw layout, plus its true labels under ``raw/ground_truth``."""
    plan = scene.plan
    folder = raw_scene_dir(raw, plan.split, plan.scene_id)
    labelled = plan.split != "test"
    write_raw_scene(
        folder, plan.scene_id, scene.vertices, scene.colors, scene.faces,
        seg_indices=scene.seg_indices if labelled else None,
        seg_groups=scene.seg_groups if labelled else None,
        axis_alignment=scene.axis_alignment, scene_type=SCENE_TYPES[plan.room_type],
    )
    save_npy(raw / "ground_truth" / f"{plan.scene_id}.npy", scene.ground_truth)


def load_ground_truth(raw: str | os.PathLike, scene_id: str) -> np.ndarray:
    """True ScanNet200 id per vertex of a generated scene (0 = unlabelled or not one of the 200)."""
    return load_npy(Path(raw) / "ground_truth" / f"{scene_id}.npy")


def scene_stats(scene: SyntheticScene) -> dict:
    """Per-class vertex counts of one scene (class index order) and its vertex count."""
    idx = meta.class_table().to_index(scene.ground_truth)
    return {
        "index": scene.plan.index,
        "split": scene.plan.split,
        "vertices": int(len(scene.vertices)),
        "class_counts": np.bincount(idx[idx >= 0], minlength=meta.NUM_CLASSES),
    }


# build(plan, seed=seed) -> scene: a module-level function or a partial of one (workers receive it)
SceneBuilder = Callable[..., SyntheticScene]


def _job(args: tuple[str | None, ScenePlan, int, SceneBuilder]) -> dict:
    raw, plan, seed, build = args
    scene = build(plan, seed=seed)
    if raw is not None:
        write_scene(Path(raw), scene)
    return scene_stats(scene)


def imbalance_summary(stats: list[dict]) -> dict:
    """Point- and center-level imbalance factors over the train scenes (classes present)."""
    train = [s for s in stats if s["split"] == "train"]
    counts = np.sum([s["class_counts"] for s in train], axis=0) if train else np.zeros(meta.NUM_CLASSES, np.int64)
    scenes = np.sum([s["class_counts"] > 0 for s in train], axis=0) if train else np.zeros(meta.NUM_CLASSES, np.int64)
    present = counts > 0
    names = meta.class_table().name
    return {
        "train_classes_present": int(present.sum()),
        "missing_train_classes": [names[i] for i in np.flatnonzero(~present)],
        "point_imbalance_factor": float(counts.max() / counts[present].min()) if present.any() else 0.0,
        "center_imbalance_factor": float(scenes.max() / scenes[present].min()) if present.any() else 0.0,
        "class_vertex_counts": counts.astype(int).tolist(),
        "class_scene_counts": scenes.astype(int).tolist(),
    }


def run_scenes(
    plans: list[ScenePlan], seed: int, raw: Path | None, workers: int, progress: bool, build: SceneBuilder
) -> list[dict]:
    """Build (and, with ``raw``, write) every planned scene; returns their stats in plan order."""
    jobs = [(None if raw is None else str(raw), p, seed, build) for p in plans]
    bar = tqdm(total=len(jobs), desc="synthetic scenes", unit="scene", disable=not progress)
    out: list[dict] = []
    if workers <= 1:
        for j in jobs:
            out.append(_job(j))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for s in pool.map(_job, jobs, chunksize=1):
                out.append(s)
                bar.update()
    bar.close()
    return out


def write_split_lists(raw: Path, plans: list[ScenePlan]) -> None:
    """``scannetv2_{train,val,test}.txt``: the release's own scene lists (preprocessing reads them)."""
    for split in meta.SCENE_SPLITS:
        ids = [p.scene_id for p in plans if p.split == split]
        atomic_write_text(raw / f"scannetv2_{split}.txt", "".join(f"{s}\n" for s in ids))


def write_release(
    out: str | os.PathLike, plans: list[ScenePlan], seed: int, workers: int | None, progress: bool,
    build: SceneBuilder, header: dict,
) -> dict:
    """Build and write every planned scene (``workers`` processes, default all cores), the
    release's scene lists and ``synthetic_summary.json``: ``header``, then the scenes' mean and
    largest vertex counts and both imbalance factors. Returns the summary."""
    raw = Path(out)
    workers = max(1, min(workers or os.cpu_count() or 1, len(plans) or 1))
    stats = run_scenes(plans, seed, raw, workers, progress, build)
    write_split_lists(raw, plans)
    vertices = [s["vertices"] for s in stats]
    summary = {
        **header,
        "mean_vertices": float(np.mean(vertices)) if vertices else 0.0,
        "max_vertices": int(max(vertices, default=0)),
        **imbalance_summary(stats),
    }
    atomic_write_text(raw / "synthetic_summary.json", json.dumps(summary, indent=1))
    return summary


def generate_synthetic_scannet(
    out: str | os.PathLike,
    train: int = 100,
    val: int = 20,
    test: int = 10,
    seed: int = 0,
    vertices: int = 40000,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write a synthetic ScanNet release to ``out`` and return its summary (also in
    ``out/synthetic_summary.json``): scene counts, mean vertices, both imbalance factors.

    ``vertices`` is a per-scene vertex budget (:func:`build_scene`), not the size the scenes get:
    rooms need their walls, floor and furniture, so they end above it (a mean of about 59.3k
    vertices at the default 40000; ``mean_vertices`` of the summary reports it).
    """
    if vertices < 1000:
        raise ValueError(f"vertices must be >= 1000 per scene, got {vertices}")
    plans = plan_dataset(train, val, test, seed)
    header = {
        "seed": seed,
        "vertices_requested": vertices,
        "scenes": {"train": train, "val": val, "test": test},
        "room_types": {p.scene_id: p.room_type for p in plans},
    }
    return write_release(out, plans, seed, workers, progress, functools.partial(build_scene, vertices=vertices), header)
