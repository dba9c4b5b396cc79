"""ScanNet v2's 20-class benchmark from the same raw scans as ScanNet200.

Labels (as Pointcept's ScanNet preprocessing writes ``segment20.npy``): raw_category → the
``nyu40id`` column of ``scannetv2-labels.combined.tsv`` (first row wins, no row → 0); the 20
valid NYU40 ids, in ``classes.tsv`` order, become 0..19; everything else is ignore. Submission
files hold the NYU40 id of each vertex's class. No evaluation groups: the benchmark reports the
mean over the 20 classes only.

The class table is ``datasets/scannet20/classes.tsv``, shipped as ``pointseg/tables_scannet20``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pointseg import meta
from pointseg.datasets.base import DatasetSpec, read_class_tsv, spec_from_rows

LABEL_FILE = "segment20.npy"
ID_COLUMN = "nyu40id"
TABLE = Path(__file__).resolve().parent.parent / "tables_scannet20" / "classes.tsv"


@functools.cache
def _nyu40_to_index() -> np.ndarray:
    ids = build().ids
    lut = np.full(int(ids.max()) + 1, meta.IGNORE_INDEX, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    return lut


def raw_labels(categories: Sequence[str]) -> np.ndarray:
    """raw_category → NYU40 id → class index 0..19, −1 for the other NYU40 ids and unknown categories."""
    table = meta.raw_category_table(ID_COLUMN)
    lut = _nyu40_to_index()
    nyu = np.array([table.get(c, 0) for c in categories], dtype=np.int64)
    out = np.full(nyu.shape, meta.IGNORE_INDEX, dtype=np.int64)
    ok = (nyu >= 0) & (nyu < len(lut))
    out[ok] = lut[nyu[ok]]
    return out


@functools.cache
def build() -> DatasetSpec:
    rows = read_class_tsv(TABLE, TABLE.read_text(encoding="utf-8"), ID_COLUMN)
    return spec_from_rows(
        rows,
        ID_COLUMN,
        name="scannet20",
        label_file=LABEL_FILE,
        title="ScanNet20",
        stats_file="stats_scannet20.json",
        raw_labels=raw_labels,
    )
