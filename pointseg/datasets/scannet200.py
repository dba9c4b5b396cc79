"""ScanNet200 (Rozenberszki et al., ECCV 2022): 200 classes of the raw ScanNet v2 scans, scored
over all 200 and over head / common / tail; submission files hold ScanNet category ids.

The class table is ``datasets/scannet200/classes.tsv`` (read by :mod:`pointseg.meta`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from pointseg import meta
from pointseg.datasets.base import DatasetSpec

LABEL_FILE = "segment200.npy"


def raw_labels(categories: Sequence[str]) -> np.ndarray:
    """raw_category → ``id`` column of the tsv (first row wins, no row → 0) → class index, −1 for
    ids outside the 200 (``preprocess_scannet200.py`` of ScanNet)."""
    table = meta.raw_category_table("id")
    return meta.class_table().to_index(np.array([table.get(c, 0) for c in categories], dtype=np.int64))


@functools.cache
def build() -> DatasetSpec:
    table = meta.class_table()
    return DatasetSpec(
        name="scannet200",
        names=table.name,
        ids=table.scannet_id,
        colors=table.color,
        label_file=LABEL_FILE,
        title="ScanNet200",
        id_name="scannet_id",
        groups=table.split,
        group_names=meta.SPLITS,
        ignore_index=meta.IGNORE_INDEX,
        train_split=meta.SCENE_SPLITS[0],
        val_split=meta.SCENE_SPLITS[1],
        test_split=meta.SCENE_SPLITS[2],
        stats_file="stats.json",
        raw_labels=raw_labels,
    )
