"""The instance bank of tail-instance pasting: every instance of chosen (tail) classes in the
training scenes, cut out once and kept on disk for :class:`pointseg.data.transforms.PasteTailInstances`.

The language-grounded ScanNet200 baseline ([LG], Rozenberszki et al., ECCV 2022,
``sample_tail_instances``) pastes instances of tail classes from a folder of per-instance files
into training scenes; CeCo's ScanNet200 table calls it "Ins. Samp.". Here the bank is cut from
the preprocessed scene folders (``instance.npy`` and ``segment200.npy``): one entry per (instance
id, class) of a chosen class with at least ``min_points`` points, its footprint centred on
x = y = 0 and its lowest point at z = 0, so that pasting is a rotation about z and a translation.

Building reads every training scene once, so the bank is written (atomically, under a lock that
makes concurrent data-loader workers or processes build it once) to the user's cache folder,
keyed by the data folder's absolute path, the split, the classes and ``min_points``, and checked
against each scene file's size, modification time and inode, as the class-count cache of
``pointseg.data.stats`` is. It is read back memory-mapped, so loader workers share its pages
instead of each holding a copy, and kept per process (:func:`instance_bank`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointseg import meta
from pointseg.data.scene import SCENE_FILES, SEGMENT_FILE, load_scene
from pointseg.utils.io import atomic_path, load_npy

log = logging.getLogger(__name__)

# Arrays of a bank folder (all rows of all instances, instance i at rows offsets[i]:offsets[i+1]).
BANK_ARRAYS = ("coord", "color", "normal")
META_FILE = "bank.json"
INSTANCE_FILE = "instance.npy"
# What ``classes`` may name besides a list of class indices: a split of the ScanNet200 table, or
# the rarest present classes of the training split's point counts.
QUANTILE = "quantile"
CLASS_SPECS = (*meta.SPLITS, QUANTILE)


def select_classes(
    spec: str | Sequence[int],
    root: str | os.PathLike | None = None,
    split: str = "train",
    quantile: float = 1 / 3,
    num_classes: int = meta.NUM_CLASSES,
) -> tuple[int, ...]:
    """Sorted class indices that ``spec`` names: ``head`` / ``common`` / ``tail`` (the ScanNet200
    split table, ``pointseg/tables/classes.tsv``); ``quantile``: the classes present in the
    training split whose point count n_k is at most the ``quantile`` quantile (numpy's linear
    rule) of the present classes' counts (``DATA/stats.json`` or the labels counted); or a list
    of class indices."""
    if isinstance(spec, str):
        if spec in meta.SPLITS:
            return tuple(int(k) for k in np.flatnonzero(meta.class_table().split_masks[spec]))
        if spec != QUANTILE:
            raise ValueError(f"classes: must be one of {list(CLASS_SPECS)} or a list of class indices, got {spec!r}")
        if not 0.0 < float(quantile) <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        from pointseg.data.stats import train_class_counts

        if split != "train":
            raise ValueError(f"classes: quantile counts the training split, not {split!r}")
        points = train_class_counts(root, num_classes, "classes: quantile").points
        present = points[points > 0]
        if present.size == 0:
            raise ValueError(f"classes: quantile: {root} has no labelled training point")
        bound = np.quantile(present.astype(np.float64), float(quantile))
        return tuple(int(k) for k in np.flatnonzero((points > 0) & (points <= bound)))
    classes = sorted({int(k) for k in spec})
    if not classes or classes[0] < 0 or classes[-1] >= num_classes:
        raise ValueError(f"classes: need class indices in 0..{num_classes - 1}, got {list(spec)!r}")
    return tuple(classes)


@dataclass
class InstanceBank:
    """Instances of the chosen classes: ``label[i]`` is instance i's class, its points are rows
    ``offsets[i]:offsets[i + 1]`` of ``coord`` (footprint centred on x = y = 0, bottom at z = 0),
    ``color`` (0..255) and ``normal``, all float32."""

    coord: np.ndarray
    color: np.ndarray
    normal: np.ndarray
    offsets: np.ndarray  # int64 (I + 1,)
    label: np.ndarray  # int64 (I,)
    _by_class: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.label.size)

    @property
    def classes(self) -> np.ndarray:
        """Sorted classes with at least one instance."""
        return np.unique(self.label)

    def of_class(self, cls: int) -> np.ndarray:
        """Indices of the instances of ``cls`` (ascending)."""
        if cls not in self._by_class:
            self._by_class[cls] = np.flatnonzero(self.label == cls)
        return self._by_class[cls]

    def instance(self, i: int) -> dict[str, np.ndarray]:
        """Instance i's ``coord``, ``color`` and ``normal`` (float32 copies)."""
        rows = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return {k: np.array(getattr(self, k)[rows], dtype=np.float32) for k in BANK_ARRAYS}


def cut_instances(scene: dict, classes: Sequence[int], min_points: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(class, {coord, color, normal}) of every (instance id, class) pair of a scene with a class
    of ``classes`` and at least ``min_points`` points, in (instance id, class) order; coordinates
    normalized as the bank keeps them."""
    if "instance" not in scene or "segment" not in scene:
        raise ValueError(f"scene {scene.get('name', '?')!r}: instance pasting needs instance.npy and segment200.npy")
    seg, inst = scene["segment"], scene["instance"]
    keep = np.flatnonzero((inst >= 0) & np.isin(seg, np.asarray(classes, dtype=np.int64)))
    if keep.size == 0:
        return []
    pairs = np.stack([inst[keep], seg[keep]], axis=1)
    groups, group_of, sizes = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    group_of = group_of.reshape(-1)
    order = np.argsort(group_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for g, (_, cls) in enumerate(groups):
        if sizes[g] < min_points:
            continue
        rows = keep[order[starts[g] : starts[g + 1]]]
        coord = scene["coord"][rows].astype(np.float64)
        low, high = coord.min(axis=0), coord.max(axis=0)
        coord -= [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]
        out.append((int(cls), {
            "coord": coord.astype(np.float32),
            "color": scene["color"][rows].astype(np.float32),
            "normal": scene["normal"][rows].astype(np.float32),
        }))
    return out


def build_bank(scene_dirs: Sequence[Path], classes: Sequence[int], min_points: int) -> InstanceBank:
    """Cut the instances of ``classes`` out of the scenes (in the given order)."""
    labels, parts = [], {k: [] for k in BANK_ARRAYS}
    wanted = np.asarray(classes, dtype=np.int64)
    for folder in scene_dirs:
        if not (folder / INSTANCE_FILE).is_file():
            raise ValueError(f"{folder / INSTANCE_FILE}: missing (instance pasting cuts the instances out of it)")
        if not np.isin(load_npy(folder / SEGMENT_FILE), wanted).any():
            continue  # no point of the classes: the scene's other arrays need not be read
        for cls, arrays in cut_instances(load_scene(folder), classes, min_points):
            labels.append(cls)
            for k in BANK_ARRAYS:
                parts[k].append(arrays[k])
    sizes = [len(c) for c in parts["coord"]]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    empty = np.zeros((0, 3), dtype=np.float32)
    arrays = {k: np.concatenate(parts[k]) if parts[k] else empty for k in BANK_ARRAYS}
    return InstanceBank(**arrays, offsets=offsets, label=np.asarray(labels, dtype=np.int64))


def _scene_dirs(root: Path, split: str) -> list[Path]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: split folder not found (instance pasting builds its bank from it)")
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _fingerprint(scene_dirs: Sequence[Path]) -> list[list]:
    """Per scene its name and each scene file's size, mtime and inode: a rewritten scene rebuilds the bank."""
    out = []
    for folder in scene_dirs:
        row: list = [folder.name]
        for name in SCENE_FILES:
            path = folder / name
            if path.is_file():
                st = path.stat()
                row.append([name, st.st_size, st.st_mtime_ns, st.st_ino])
        out.append(row)
    return out


def bank_dir(root: str | os.PathLike, split: str, classes: Sequence[int], min_points: int) -> Path:
    """Where the bank of (root, split, classes, min_points) is cached."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pointseg" / "instance_bank"
    key = f"{Path(root).resolve()}|{split}|{','.join(map(str, classes))}|{min_points}"
    return base / hashlib.sha1(key.encode()).hexdigest()[:16]


def _read_bank(folder: Path, fingerprint: list) -> InstanceBank | None:
    """The cached bank if it is complete and was built from these very scene files, else None."""
    try:
        info = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if info.get("scenes") != fingerprint:
            return None
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in BANK_ARRAYS}
        offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        label = np.load(folder / "label.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return InstanceBank(**arrays, offsets=offsets, label=label)


def _write_bank(folder: Path, bank: InstanceBank, info: dict) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for k in (*BANK_ARRAYS, "offsets", "label"):
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(bank, k)), allow_pickle=False)
        (tmp / META_FILE).write_text(json.dumps(info) + "\n", encoding="utf-8")


class _BuildLock:
    """A blocking ``flock`` beside the bank folder: the first process builds, the others wait and read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


# Banks already read by this process, by their cache folder.
_LOADED: dict[Path, InstanceBank] = {}


def instance_bank(
    root: str | os.PathLike, split: str, classes: Sequence[int], min_points: int = 20
) -> InstanceBank:
    """The bank of ``root/<split>``'s instances of ``classes``: from this process's memory, else the
    cache folder (memory-mapped), else built from the scenes and cached. Raises ValueError naming
    the split folder when no scene holds an instance of the classes."""
    classes = tuple(sorted(int(k) for k in classes))
    folder = bank_dir(root, split, classes, min_points)
    if folder in _LOADED:
        return _LOADED[folder]
    root = Path(root)
    scenes = _scene_dirs(root, split)
    fingerprint = _fingerprint(scenes)
    bank = _read_bank(folder, fingerprint)
    if bank is None:
        with _BuildLock(folder.with_name(folder.name + ".lock")):
            bank = _read_bank(folder, fingerprint)  # another process may have built it meanwhile
            if bank is None:
                log.info("building the instance bank of %s/%s (classes %s) in %s", root, split, list(classes), folder)
                bank = build_bank(scenes, classes, min_points)
                if len(bank):
                    info = {"root": str(root.resolve()), "split": split, "classes": list(classes),
                            "min_points": min_points, "instances": len(bank), "scenes": fingerprint}
                    try:
                        _write_bank(folder, bank, info)
                    except OSError as e:  # a read-only cache only costs the rebuild next time
                        log.warning("cannot cache the instance bank in %s (%s)", folder, e)
    if not len(bank):
        raise ValueError(
            f"{root / split}: no instance of classes {list(classes)} with >= {min_points} points "
            "(instance.npy, segment200.npy): nothing to paste"
        )
    _LOADED[folder] = bank
    return bank


__all__ = ["CLASS_SPECS", "InstanceBank", "build_bank", "bank_dir", "cut_instances", "instance_bank", "select_classes"]
