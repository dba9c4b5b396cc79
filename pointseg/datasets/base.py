"""What pointseg needs to know of a dataset, as data: :class:`DatasetSpec`.

A spec says which classes there are (names, colours, the id each has in the benchmark's files),
which file of a scene folder holds the labels, which evaluation groups the classes fall in
(ScanNet200's head / common / tail), how predictions become submission ids, and how
preprocessing derives labels from raw annotation categories. Code that concerns the dataset being
trained or evaluated asks the spec instead of assuming ScanNet200. A class subset
(:func:`subset`) is a spec too: the parent's label file, remapped when a scene is loaded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = -1

# raw annotation categories (one per segment group) → class index of the spec, −1 for none
RawLabelRule = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset's label space. Arrays are indexed by the contiguous class index 0..K−1."""

    name: str
    names: tuple[str, ...]
    ids: np.ndarray  # int64 (K,): the class's id in ground-truth and submission files
    colors: np.ndarray  # uint8 (K, 3): display colour
    label_file: str  # the scene folder's label file, e.g. "segment200.npy"
    title: str = ""  # how messages name it ("ScanNet200"); empty: the name
    id_name: str = "id"  # what the benchmark calls ``ids`` ("scannet_id", "nyu40id")
    groups: tuple[str, ...] = ()  # evaluation group of each class ("" = none); () = no groups
    group_names: tuple[str, ...] = ()  # the groups in report order, e.g. head, common, tail
    ignore_index: int = IGNORE_INDEX
    # folder names of DATA/<split>/: what the trainer trains / validates on and submissions are for
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    stats_file: str = "stats.json"  # DATA/<stats_file>: the per-class counts preprocessing writes
    raw_labels: RawLabelRule | None = field(default=None, repr=False)
    # A subset reads its parent's label file: ``file_classes`` classes there, ``from_file`` maps a
    # file class index to this spec's index (−1: not kept). None: the file holds this spec's indices.
    parent: str | None = None
    from_file: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0 or len(set(self.names)) != k:
            raise ValueError(f"dataset {self.name!r}: class names must be non-empty and distinct")
        if self.ids.shape != (k,) or self.colors.shape != (k, 3):
            raise ValueError(f"dataset {self.name!r}: {k} names but ids {self.ids.shape}, colours {self.colors.shape}")
        if self.groups and len(self.groups) != k:
            raise ValueError(f"dataset {self.name!r}: {len(self.groups)} group entries for {k} classes")

    @property
    def scene_splits(self) -> tuple[str, ...]:
        return (self.train_split, self.val_split, self.test_split)

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def file_classes(self) -> int:
        """Number of classes the label file holds (the parent's for a subset)."""
        return self.num_classes if self.from_file is None else len(self.from_file)

    @property
    def group_masks(self) -> dict[str, np.ndarray]:
        """Boolean (K,) mask of the classes of each evaluation group (empty without groups)."""
        arr = np.asarray(self.groups)
        return {g: arr == g for g in self.group_names}

    def class_group(self, index: int) -> str:
        return self.groups[index] if self.groups else ""

    def to_classes(self, file_labels: np.ndarray) -> np.ndarray:
        """Labels as stored in ``label_file`` (−1 or 0..file_classes−1) → this spec's class indices."""
        labels = np.asarray(file_labels, dtype=np.int64)
        if self.from_file is None:
            return labels
        out = np.full(labels.shape, self.ignore_index, dtype=np.int64)
        ok = labels >= 0
        out[ok] = self.from_file[labels[ok]]
        return out

    def to_ids(self, pred: np.ndarray) -> np.ndarray:
        """Class indices 0..K−1 → the ids a submission file holds; any other value is an error."""
        pred = np.asarray(pred)
        if not np.issubdtype(pred.dtype, np.integer):
            raise TypeError(f"predictions must be integer class indices, got dtype {pred.dtype}")
        bad = (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} predictions are not a class index 0..{self.num_classes - 1}")
        return self.ids[pred]


def read_class_tsv(path: Path | str, text: str, id_column: str) -> list[dict[str, str]]:
    """Rows of a class table (``index``, ``id_column``, ``name``, ``r g b`` and maybe ``split``),
    checked to be numbered 0..K−1; ``path`` only names the file in errors."""
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    missing = {"index", id_column, "name", "r", "g", "b"} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: the index column must count 0..{len(rows) - 1}")
    return rows


def spec_from_rows(rows: list[dict[str, str]], id_column: str, **kwargs) -> DatasetSpec:
    """A spec whose names, ids and colours are the table's rows."""
    return DatasetSpec(
        names=tuple(r["name"] for r in rows),
        ids=np.array([int(r[id_column]) for r in rows], dtype=np.int64),
        colors=np.array([[int(r["r"]), int(r["g"]), int(r["b"])] for r in rows], dtype=np.uint8),
        id_name=id_column,
        **kwargs,
    )


def subset(parent: DatasetSpec, classes: Sequence[str], name: str | None = None) -> DatasetSpec:
    """``parent`` restricted to ``classes`` (parent class names, in the new index order 0..K−1);
    every other class becomes ignore. The label file stays the parent's, remapped on load;
    evaluation groups, colours and submission ids are the parent's of the kept classes."""
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in parent.names]
    if unknown:
        raise ValueError(f"data.classes: {unknown} are not classes of {parent.name!r}")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"data.classes: need a non-empty list of distinct {parent.name!r} class names")
    keep = np.array([parent.names.index(c) for c in classes], dtype=np.int64)
    # composed with the parent's own remapping, so a subset of a subset still reads the file
    lut = np.full(parent.num_classes, parent.ignore_index, dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    from_file = lut if parent.from_file is None else np.where(parent.from_file >= 0, lut[np.maximum(parent.from_file, 0)], parent.ignore_index)
    return DatasetSpec(
        name=name or f"{parent.name}[{len(keep)}]",
        names=tuple(classes),
        ids=parent.ids[keep],
        colors=parent.colors[keep],
        label_file=parent.label_file,
        title=f"{parent.display_name} ({len(keep)} classes)",
        id_name=parent.id_name,
        groups=tuple(parent.groups[i] for i in keep) if parent.groups else (),
        group_names=parent.group_names,
        ignore_index=parent.ignore_index,
        train_split=parent.train_split,
        val_split=parent.val_split,
        test_split=parent.test_split,
        stats_file=parent.stats_file,
        raw_labels=None,  # preprocessing writes the parent's labels
        parent=parent.parent or parent.name,
        from_file=from_file,
    )


def check_num_classes(spec: DatasetSpec, num_classes: int) -> None:
    """Raise (one line) unless the network predicts exactly the dataset's classes."""
    if int(num_classes) != spec.num_classes:
        raise ValueError(
            f"model.num_classes is {int(num_classes)} but dataset {spec.name!r} has {spec.num_classes} classes "
            f"(data.dataset / data.classes); set model.num_classes: {spec.num_classes}"
        )
