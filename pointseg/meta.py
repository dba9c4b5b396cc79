"""ScanNet200 facts: the 200 classes, the raw-category table and the official scene lists.

The tables live in ``datasets/scannet200/`` of the repository; ``pointseg/tables`` links to that
folder, so they ship in the wheel as package data and are found from any working directory.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_CLASSES = 200
IGNORE_INDEX = -1
SPLITS = ("head", "common", "tail")
SCENE_SPLITS = ("train", "val", "test")
MAX_SCANNET_ID = 1191
# Classes that occur in train scenes only (scannet200_splits.py): never evaluated on val.
TRAIN_ONLY_SCANNET_IDS = (121, 221, 286, 331, 399, 572, 581, 1174, 1178, 1183, 1190)


def tables_dir() -> Path:
    """Folder holding the tables."""
    return Path(__file__).resolve().parent / "tables"


def read_table_text(name: str) -> str:
    """Text of one file of the ScanNet200 tables folder."""
    return (tables_dir() / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ClassTable:
    """The 200 ScanNet200 classes, indexed by the contiguous training index 0..199."""

    scannet_id: np.ndarray  # int64 (200,), strictly increasing, 1..1191
    name: tuple[str, ...]
    split: tuple[str, ...]  # "head" | "common" | "tail"
    color: np.ndarray  # uint8 (200, 3)

    @property
    def split_masks(self) -> dict[str, np.ndarray]:
        """Boolean (200,) mask of the classes of each of head / common / tail."""
        arr = np.asarray(self.split)
        return {s: arr == s for s in SPLITS}

    @functools.cached_property
    def id_to_index(self) -> np.ndarray:
        """Lookup table scannet_id → class index, −1 for ids that are not one of the 200."""
        lut = np.full(MAX_SCANNET_ID + 1, IGNORE_INDEX, dtype=np.int64)
        lut[self.scannet_id] = np.arange(NUM_CLASSES)
        return lut

    def to_index(self, scannet_ids: np.ndarray) -> np.ndarray:
        """Map ScanNet ids (any integer array) to class indices; ids outside the 200 → −1."""
        ids = np.asarray(scannet_ids, dtype=np.int64)
        out = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        ok = (ids >= 0) & (ids <= MAX_SCANNET_ID)
        out[ok] = self.id_to_index[ids[ok]]
        return out

    @property
    def train_only(self) -> np.ndarray:
        """Boolean (200,) mask of the 11 classes absent from the val split."""
        return np.isin(self.scannet_id, TRAIN_ONLY_SCANNET_IDS)


@functools.cache
def class_table() -> ClassTable:
    rows = list(csv.DictReader(io.StringIO(read_table_text("classes.tsv")), delimiter="\t"))
    if len(rows) != NUM_CLASSES or [int(r["index"]) for r in rows] != list(range(NUM_CLASSES)):
        raise ValueError("classes.tsv: expected 200 rows with index 0..199")
    return ClassTable(
        scannet_id=np.array([int(r["scannet_id"]) for r in rows], dtype=np.int64),
        name=tuple(r["name"] for r in rows),
        split=tuple(r["split"] for r in rows),
        color=np.array([[int(r["r"]), int(r["g"]), int(r["b"])] for r in rows], dtype=np.uint8),
    )


@functools.cache
def raw_category_table(column: str = "id") -> dict[str, int]:
    """raw_category → the integer ``column`` of its row (``id``: the ScanNet category id of
    ScanNet200; ``nyu40id``: the NYU40 id of ScanNet v2's 20 classes); the first row wins, as in
    the official scripts.

    The file has CR CR LF line endings; ``csv`` with ``newline=''`` semantics would keep a stray
    CR, so lines are split on any line break and empty ones dropped.
    """
    lines = [ln for ln in read_table_text("scannetv2-labels.combined.tsv").splitlines() if ln.strip()]
    reader = csv.DictReader(lines, delimiter="\t")
    if column not in (reader.fieldnames or ()):
        raise ValueError(f"scannetv2-labels.combined.tsv: no column {column!r}")
    table: dict[str, int] = {}
    for row in reader:
        table.setdefault(row["raw_category"], int(row[column]))
    return table


@functools.cache
def raw_categories_of_class() -> dict[int, tuple[str, ...]]:
    """ScanNet200 scannet_id → the raw category strings that map to it (tsv order)."""
    valid = set(class_table().scannet_id.tolist())
    out: dict[int, list[str]] = {}
    for raw, cid in raw_category_table().items():
        if cid in valid:
            out.setdefault(cid, []).append(raw)
    return {k: tuple(v) for k, v in out.items()}


@functools.cache
def official_scene_list(split: str) -> tuple[str, ...]:
    """The official ScanNet v2 scene ids of ``train``, ``val`` or ``test``."""
    if split not in SCENE_SPLITS:
        raise ValueError(f"unknown scene split {split!r}; expected one of {SCENE_SPLITS}")
    text = read_table_text(f"scannetv2_{split}.txt")
    return tuple(s.strip() for s in text.splitlines() if s.strip())
