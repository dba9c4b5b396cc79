"""The ScanNet200 tables as pointseg reads them, checked against facts stated by the benchmark."""

import subprocess
import sys

import numpy as np

from pointseg import meta


def test_class_table_matches_benchmark_facts():
    t = meta.class_table()
    assert len(t.name) == meta.NUM_CLASSES == 200
    assert np.all(np.diff(t.scannet_id) > 0)
    assert t.scannet_id[0] == 1 and t.scannet_id[-1] == 1191
    sizes = {s: int(m.sum()) for s, m in t.split_masks.items()}
    assert sizes == {"head": 66, "common": 68, "tail": 66}
    assert t.name[:4] == ("wall", "chair", "floor", "table")
    assert t.color.shape == (200, 3) and t.color.dtype == np.uint8


def test_train_only_classes():
    t = meta.class_table()
    names = {t.name[i] for i in np.flatnonzero(t.train_only)}
    assert len(names) == 11
    assert {"bicycle", "candle", "luggage", "guitar case"} <= names


def test_id_to_index_roundtrip_and_invalid_ids():
    t = meta.class_table()
    assert np.array_equal(t.to_index(t.scannet_id), np.arange(200))
    # 0 (unannotated), an id that is a ScanNet category but not one of the 200, and junk.
    non200 = next(i for i in range(1, 1192) if i not in set(t.scannet_id.tolist()))
    assert t.to_index(np.array([0, non200, -5, 99999])).tolist() == [-1, -1, -1, -1]


def test_raw_category_table_first_row_wins_and_covers_all_classes():
    raw = meta.raw_category_table()
    assert raw["wall"] == 1 and raw["books"] == raw["book"] == 22
    by_class = meta.raw_categories_of_class()
    assert set(by_class) == set(meta.class_table().scannet_id.tolist())
    # Every raw name listed for a class maps back to that class under the label rule.
    assert all(raw[r] == cid for cid, names in by_class.items() for r in names)


def test_scene_lists():
    assert [len(meta.official_scene_list(s)) for s in meta.SCENE_SPLITS] == [1201, 312, 100]
    assert meta.official_scene_list("test")[0] == "scene0707_00"


def test_tables_found_from_any_working_directory(tmp_path):
    code = "from pointseg import meta; print(len(meta.class_table().name))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "200"
