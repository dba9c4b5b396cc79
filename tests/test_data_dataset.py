"""load_scene (dtypes, Pointcept folders, errors), the dataset's seeding and modes, collate."""

import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pointseg.data import ScanNet200Dataset, build_dataset, collate, load_scene
from pointseg.data.transforms import default_train_transforms
from pointseg.utils.io import save_npy


def write_scene(folder, n=800, seed=0, segment_dtype=np.int16, labelled=True, extra=False):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    coord = (rng.random((n, 3)) * [1.0, 0.8, 0.5]).astype(np.float32)
    save_npy(folder / "coord.npy", coord)
    save_npy(folder / "color.npy", rng.integers(0, 256, (n, 3), dtype=np.uint8))
    normal = rng.standard_normal((n, 3)).astype(np.float32)
    save_npy(folder / "normal.npy", normal / np.linalg.norm(normal, axis=1, keepdims=True))
    segment = rng.integers(-1, 200, n)
    if labelled:
        if segment_dtype == np.uint8:
            segment = np.clip(segment, 0, 199)
        save_npy(folder / "segment200.npy", segment.astype(segment_dtype))
        save_npy(folder / "instance.npy", rng.integers(-1, 30, n).astype(np.int32))
    if extra:  # Pointcept's ScanNet folders also hold 20-class labels
        save_npy(folder / "segment20.npy", rng.integers(-1, 20, n).astype(np.int64))
    return coord, segment


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.int64])
def test_load_scene_any_integer_dtype(tmp_path, dtype):
    coord, segment = write_scene(tmp_path / "scene0001_00", segment_dtype=dtype, extra=True)
    data = load_scene(tmp_path / "scene0001_00")
    assert set(data) == {"coord", "color", "normal", "segment", "instance", "name"}
    assert data["name"] == "scene0001_00"
    assert data["coord"].dtype == np.float32 and data["color"].dtype == np.float32
    assert data["segment"].dtype == np.int64 and data["instance"].dtype == np.int64
    np.testing.assert_array_equal(data["coord"], coord)
    expected = np.clip(segment, 0, 199) if dtype == np.uint8 else segment
    np.testing.assert_array_equal(data["segment"], expected)


def test_load_scene_unlabelled_test_scene(tmp_path):
    write_scene(tmp_path / "scene0707_00", labelled=False)
    data = load_scene(tmp_path / "scene0707_00")
    assert "segment" not in data and "instance" not in data


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "coord.npy").unlink(), "coord.npy: missing"),
        (lambda f: save_npy(f / "color.npy", np.zeros((5, 3), np.uint8)), "color.npy: expected shape"),
        (lambda f: save_npy(f / "segment200.npy", np.zeros(7, np.int64)), "segment200.npy: expected shape"),
        (lambda f: save_npy(f / "coord.npy", np.full((800, 3), np.inf, np.float32)), "coord.npy: coordinates"),
        (lambda f: save_npy(f / "segment200.npy", np.full(800, 200)), "segment200.npy: labels"),
        (lambda f: save_npy(f / "segment200.npy", np.full(800, -2)), "segment200.npy: labels"),
        (lambda f: save_npy(f / "segment200.npy", np.zeros(800, np.float32)), "segment200.npy: expected an integer"),
        (lambda f: (f / "normal.npy").write_bytes(b"garbage"), "normal.npy: cannot read"),
    ],
)
def test_load_scene_errors_name_the_file(tmp_path, breakage, message):
    folder = tmp_path / "scene0002_00"
    write_scene(folder)
    breakage(folder)
    with pytest.raises(ValueError, match=message):
        load_scene(folder)


@pytest.fixture
def data_root(tmp_path):
    for i in range(3):
        write_scene(tmp_path / "train" / f"scene000{i}_00", seed=i)
    for i in range(2):
        write_scene(tmp_path / "val" / f"scene010{i}_00", seed=10 + i)
    write_scene(tmp_path / "test" / "scene0707_00", seed=20, labelled=False)
    return tmp_path


def test_train_dataset_seeding(data_root):
    cfg = OmegaConf.create({"root": str(data_root), "voxel_size": 0.05, "features": ["color", "normal"]})
    ds = build_dataset(cfg, "train", "train")
    assert len(ds) == 3 and ds.names == ["scene0000_00", "scene0001_00", "scene0002_00"]
    a, b = ds[1], ds[1]
    np.testing.assert_array_equal(a["feat"], b["feat"])
    assert a["feat"].shape[1] == 6 and a["name"] == "scene0001_00"
    # the same item from a fresh dataset object (another worker / process) is identical
    other = build_dataset(cfg, "train", "train")
    np.testing.assert_array_equal(other[1]["coord"], a["coord"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[1]["coord"], a["coord"])
    looped = ScanNet200Dataset(data_root, "train", default_train_transforms(0.05), "train", loop=2)
    assert len(looped) == 6 and looped[4]["name"] == "scene0001_00"
    assert not np.array_equal(looped[4]["coord"], looped[1]["coord"])


def test_val_is_repeatable_and_test_keeps_inverse(data_root):
    cfg = {
        "root": str(data_root),
        "voxel_size": 0.05,
        "test_transforms": [{"name": "NormalizeColor"}, {"name": "ToFeature"}, {"name": "Voxelize"}],
    }
    val = build_dataset(cfg, "val", "val")
    first = val[0]
    val.set_epoch(5)
    np.testing.assert_array_equal(val[0]["coord"], first["coord"])
    assert "inverse" not in first and "fragments" not in first and "segment" in first
    test = build_dataset(cfg, "test", "test", fragments=True)
    sample = test[0]
    assert sample["num_points"] == 800 and sample["inverse"].shape == (800,)
    assert "segment" not in sample and len(sample["fragments"]) >= 1
    assert "fragments" not in build_dataset(cfg, "test", "test")[0]
    with pytest.raises(ValueError, match="fragments are chosen when the test dataset is built"):
        build_dataset({**cfg, "test_transforms": [{"name": "Voxelize", "fragments": True}]}, "test", "test")
    with pytest.raises(ValueError, match="fragments are a test-mode output"):
        build_dataset(cfg, "val", "val", fragments=True)
    with pytest.raises(ValueError, match="voxel_size"):
        build_dataset({**cfg, "test_transforms": [{"name": "Voxelize", "voxel_size": 0.1}]}, "val", "val")
    with pytest.raises(ValueError, match="data.root"):
        build_dataset({}, "val", "val")
    with pytest.raises(FileNotFoundError, match="nope"):
        build_dataset({"root": str(data_root)}, "nope", "val")


def test_collate_shapes(data_root):
    ds = build_dataset({"root": str(data_root), "voxel_size": 0.05}, "train", "train")
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    sizes = [len(s["grid_coord"]) for s in samples]
    assert batch["coords"].dtype == torch.int32 and batch["coords"].shape == (sum(sizes), 4)
    assert batch["coords"].is_contiguous()
    assert batch["feat"].dtype == torch.float32 and batch["feat"].shape == (sum(sizes), 3)
    assert batch["segment"].dtype == torch.int64
    assert np.bincount(batch["coords"][:, 0].numpy()).tolist() == sizes  # scene index per voxel
    assert batch["name"] == ["scene0000_00", "scene0001_00", "scene0002_00"]
    np.testing.assert_array_equal(batch["coords"][sizes[0] :, 0][: sizes[1]].numpy(), 1)
    np.testing.assert_array_equal(batch["coords"][: sizes[0], 1:].numpy(), samples[0]["grid_coord"])
    test = build_dataset({"root": str(data_root)}, "test", "test")
    tb = collate([test[0]])
    assert "segment" not in tb and tb["inverse"][0].shape == (800,) and tb["num_points"] == [800]


def _voxel_sample(name, m):
    return {
        "name": name,
        "grid_coord": np.zeros((m, 3), np.int32),
        "feat": np.zeros((m, 3), np.float32),
        "segment": np.zeros(m, np.int64),
    }


def test_collate_point_budget_drops_with_warning(caplog):
    samples = [_voxel_sample("a", 100), _voxel_sample("b", 300), _voxel_sample("c", 50)]
    with caplog.at_level(logging.WARNING, logger="pointseg.data.collate"):
        batch = collate(samples, max_points=160)
    # b would exceed the budget; c still fits after b is dropped
    assert batch["name"] == ["a", "c"]
    assert np.bincount(batch["coords"][:, 0].numpy()).tolist() == [100, 50] and batch["coords"].shape == (150, 4)
    assert "dropped scene b" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pointseg.data.collate"):
        alone = collate(samples[1:], max_points=10)
    assert alone["name"] == ["b"]
    assert "scene b alone" in caplog.text and "dropped scene c" in caplog.text
