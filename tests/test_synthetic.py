"""Synthetic ScanNet generator: layout, label round trip through the official rule, long tail."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData
from scipy.spatial import cKDTree

from pointseg import meta
from pointseg.preprocessing.preprocess import preprocess_scannet200
from pointseg.synthetic import catalog, generate, generate_synthetic_scannet, shapes

SMALL = dict(train=3, val=1, test=1, seed=7, vertices=6000, progress=False)


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("syn") / "raw"
    generate_synthetic_scannet(raw, workers=1, **SMALL)
    return raw


def _scenes(raw: Path, split: str) -> list[str]:
    return (raw / f"scannetv2_{split}.txt").read_text().split()


def _read_ply(path: Path) -> PlyData:
    # known_list_len lets plyfile read the triangle list in one vectorized step
    return PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_catalog_raw_names_map_back_and_lookalikes_match():
    specs = catalog.catalog()
    assert [s.index for s in specs] == list(range(meta.NUM_CLASSES))
    raw_table = meta.raw_category_table()
    for s in specs:
        assert s.raw_names and all(raw_table[r] == s.scannet_id for r in s.raw_names), s.name
        assert s.family in shapes.FAMILIES or s.family == "structure"
        assert np.all(s.size_hi >= s.size_lo)
    by = catalog.class_by_name()
    assert by["book"].raw_names == ("books", "book")  # several raw spellings where the tsv has them
    for group in catalog.LOOKALIKES:
        first = by[group[0]]
        for name in group[1:]:
            assert by[name].family == first.family and np.array_equal(by[name].palette, first.palette)
            np.testing.assert_allclose(by[name].size_lo, first.size_lo)
    valid = set(meta.class_table().scannet_id.tolist())
    assert all(raw_table[r] not in valid for r in catalog.outside_raw_categories())


def test_revolve_and_box_spacing_is_two_centimetres():
    rng = np.random.default_rng(0)
    for fam in ("box", "cylinder", "soft", "table"):
        m = shapes.build_shape(fam, np.array([0.6, 0.4, 0.7]), rng, 0.02)
        assert m.faces.min() >= 0 and m.faces.max() < len(m.verts)
        d, _ = cKDTree(m.verts).query(m.verts, k=2)
        assert 0.012 <= np.median(d[:, 1]) <= 0.021, fam


def test_layout_and_files_parse(small_raw: Path):
    train, val, test = (_scenes(small_raw, s) for s in meta.SCENE_SPLITS)
    assert train == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert val == ["scene0003_00"] and test == ["scene0004_00"]
    for scene in train + val:
        folder = small_raw / "scans" / scene
        ply = _read_ply(folder / f"{scene}_vh_clean_2.ply")
        n = ply["vertex"].count
        assert {p.name for p in ply["vertex"].properties} >= {"x", "y", "z", "red", "green", "blue"}
        faces = np.asarray(ply["face"].data["vertex_indices"])
        assert faces.shape[1] == 3 and faces.max() < n
        segs = json.loads((folder / f"{scene}_vh_clean_2.0.010000.segs.json").read_text())
        assert len(segs["segIndices"]) == n
        agg = json.loads((folder / f"{scene}.aggregation.json").read_text())
        assert all({"id", "segments", "label"} <= set(g) for g in agg["segGroups"])
        assert (folder / f"{scene}.txt").read_text().startswith("axisAlignment = ")
        assert generate.load_ground_truth(small_raw, scene).shape == (n,)
    # test scenes: mesh and .txt only
    assert sorted(p.name for p in (small_raw / "scans_test" / test[0]).iterdir()) == [f"{test[0]}.txt", f"{test[0]}_vh_clean_2.ply"]
    summary = json.loads((small_raw / "synthetic_summary.json").read_text())
    assert summary["scenes"] == {"train": 3, "val": 1, "test": 1}
    assert summary["point_imbalance_factor"] >= 1 and summary["center_imbalance_factor"] >= 1


def test_preprocessing_reproduces_ground_truth(small_raw: Path, tmp_path: Path):
    """The official label rule applied to the raw-category strings gives back the true labels."""
    summary = preprocess_scannet200(small_raw, tmp_path / "data", workers=1, progress=False)
    assert not summary.failed
    table = meta.class_table()
    for split in ("train", "val"):
        for scene in _scenes(small_raw, split):
            seg = np.load(tmp_path / "data" / split / scene / "segment200.npy", allow_pickle=False)
            truth = table.to_index(generate.load_ground_truth(small_raw, scene))
            np.testing.assert_array_equal(seg, truth)
    assert not (tmp_path / "data" / "test" / _scenes(small_raw, "test")[0] / "segment200.npy").exists()


def test_annotation_is_scannet_like(small_raw: Path):
    valid = set(meta.class_table().scannet_id.tolist())
    raw_table = meta.raw_category_table()
    outside = ungrouped = 0
    patch_sizes = []
    for scene in _scenes(small_raw, "train") + _scenes(small_raw, "val"):
        folder = small_raw / "scans" / scene
        seg = np.array(json.loads((folder / f"{scene}_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
        groups = json.loads((folder / f"{scene}.aggregation.json").read_text())["segGroups"]
        outside += sum(raw_table.get(g["label"], 0) not in valid for g in groups)
        in_group = np.isin(seg, np.concatenate([g["segments"] for g in groups]))
        ungrouped += int((~in_group).sum())
        assert np.all(generate.load_ground_truth(small_raw, scene)[~in_group] == 0)
        patch_sizes.append(np.unique(seg, return_counts=True)[1])
        ply = _read_ply(folder / f"{scene}_vh_clean_2.ply")
        xyz = np.stack([ply["vertex"][c] for c in "xyz"], 1)
        d, _ = cKDTree(xyz).query(xyz, k=2)
        assert 0.01 <= np.median(d[:, 1]) <= 0.04  # about 2 cm, coarser on walls and floors
        # patches are spatially coherent: small compared with the scene
        for s in np.unique(seg)[:50]:
            assert np.ptp(xyz[seg == s], axis=0).max() < 0.8
    sizes = np.concatenate(patch_sizes)
    assert outside > 0 and ungrouped > 0
    assert 20 <= np.median(sizes) <= 500


def test_same_seed_same_bytes_whatever_the_workers(small_raw: Path, tmp_path: Path):
    again = tmp_path / "raw"
    generate_synthetic_scannet(again, workers=2, **SMALL)
    assert _digest(again) == _digest(small_raw)
    other = tmp_path / "other"
    generate_synthetic_scannet(other, workers=1, **{**SMALL, "seed": 8, "train": 1, "val": 0, "test": 0})
    a = (small_raw / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").read_bytes()
    assert (other / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").read_bytes() != a


def test_written_classes_match_the_plan(small_raw: Path):
    """Every class the plan forces into a scene is really in its written ground truth."""
    plans = generate.plan_dataset(3, 1, 1, SMALL["seed"])
    table = meta.class_table()
    for p in plans[:3]:
        present = set(np.unique(generate.load_ground_truth(small_raw, p.scene_id)).tolist())
        assert {int(table.scannet_id[i]) for i in p.forced} - {1, 3} <= present


@pytest.mark.slow
def test_default_train_set_is_long_tailed():
    """The default train set (100 scenes, seed 0, 40 k vertices), built in memory exactly as the
    generator writes it: all 200 classes occur, tail classes in few scenes, point imbalance >= 1000."""
    plans = [p for p in generate.plan_dataset(100, 20, 10, 0) if p.split == "train"]
    build = functools.partial(generate.build_scene, vertices=40000)
    stats = generate.run_scenes(plans, 0, raw=None, workers=1, progress=False, build=build)
    s = generate.imbalance_summary(stats)
    assert s["train_classes_present"] == 200, s["missing_train_classes"]
    assert s["point_imbalance_factor"] >= 1000
    scenes = np.array(s["class_scene_counts"])
    split = np.asarray(meta.class_table().split)
    assert np.median(scenes[split == "tail"]) <= 2
    assert scenes[split == "head"].mean() > 3 * scenes[split == "tail"].mean()
    assert scenes[split == "tail"].max() <= 10
    assert s["center_imbalance_factor"] >= 20


def test_bad_arguments_are_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="vertices"):
        generate_synthetic_scannet(tmp_path, train=1, val=0, test=0, vertices=10, progress=False)
    with pytest.raises(ValueError, match="train"):
        generate.plan_dataset(-1, 0, 0)
