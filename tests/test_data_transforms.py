"""Augmentations: determinism, geometry (distances, normals), bounds; elastic vs scipy oracle."""

import math

import numpy as np
import pytest
import scipy.ndimage
from scipy.interpolate import RegularGridInterpolator

from pointseg.data.transforms import (
    TRANSFORMS,
    ChromaticAutoContrast,
    ChromaticJitter,
    ChromaticTranslation,
    ElasticDistortion,
    NormalizeColor,
    RandomFlip,
    RandomRotate,
    ToFeature,
    Voxelize,
    build_transforms,
    default_test_transforms,
    default_train_transforms,
    elastic_distortion,
)


def make_sample(n: int = 3000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    coord = (rng.random((n, 3)) * [2.0, 1.5, 1.0]).astype(np.float32)
    normal = rng.standard_normal((n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return {
        "coord": coord,
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "normal": normal,
        "segment": rng.integers(-1, 200, n),
        "instance": rng.integers(-1, 10, n),
        "name": "scene0000_00",
    }


def copy(sample: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sample.items()}


def test_registry_names_match_classes_and_default_pipelines_build():
    for name, cls in TRANSFORMS.items():
        assert cls.__name__ == name
    train = build_transforms(default_train_transforms())
    test = build_transforms(default_test_transforms())
    assert [type(t).__name__ for t in train.transforms][-1] == "Voxelize"
    assert test.transforms[-1].mode == "test"
    with pytest.raises(ValueError, match=r"transforms\[0\]: unknown name 'Nope'"):
        build_transforms([{"name": "Nope"}])
    with pytest.raises(ValueError, match="RandomScale"):
        build_transforms([{"name": "RandomScale", "bogus": 1}])


def test_default_pipeline_is_deterministic_under_a_seed():
    pipeline = build_transforms(default_train_transforms())
    sample = make_sample()
    a = pipeline(copy(sample), np.random.default_rng(7))
    b = pipeline(copy(sample), np.random.default_rng(7))
    c = pipeline(copy(sample), np.random.default_rng(8))
    for key in ("coord", "feat", "grid_coord", "segment"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["coord"].shape != c["coord"].shape or not np.array_equal(a["coord"], c["coord"])
    assert a["feat"].dtype == np.float32 and a["grid_coord"].dtype == np.int32
    assert a["feat"].min() >= -0.5 and a["feat"].max() <= 0.5


def test_rotation_preserves_distances_and_rotates_normals():
    sample = make_sample(500)
    # normals defined as unit vectors towards the next point: they must rotate with the cloud
    diff = np.roll(sample["coord"], -1, axis=0) - sample["coord"]
    sample["normal"] = diff / np.linalg.norm(diff, axis=1, keepdims=True)
    before = copy(sample)
    out = RandomRotate(x=(-0.3, 0.3), y=(-0.3, 0.3))(sample, np.random.default_rng(3))
    d0 = np.linalg.norm(before["coord"][:, None] - before["coord"][None], axis=-1)
    d1 = np.linalg.norm(out["coord"][:, None] - out["coord"][None], axis=-1)
    np.testing.assert_allclose(d1, d0, atol=2e-5)
    assert not np.allclose(out["coord"], before["coord"], atol=1e-2)
    new_diff = np.roll(out["coord"], -1, axis=0) - out["coord"]
    np.testing.assert_allclose(out["normal"], new_diff / np.linalg.norm(new_diff, axis=1, keepdims=True), atol=1e-4)
    # proper rotation (no reflection): orientation of a triangle is kept
    tri0 = np.linalg.det(before["coord"][1:4] - before["coord"][0])
    tri1 = np.linalg.det(out["coord"][1:4] - out["coord"][0])
    assert tri0 * tri1 > 0


def test_rotation_angle_ranges():
    # z uniform on (-pi, pi), x/y within (-pi/64, pi/64): the z axis tilts by at most ~pi/45
    for seed in range(20):
        sample = {"coord": np.zeros((2, 3), np.float32), "normal": np.array([[0, 0, 1], [1, 0, 0]], np.float32)}
        out = RandomRotate()(sample, np.random.default_rng(seed))
        tilt = math.acos(float(np.clip(out["normal"][0, 2], -1, 1)))
        assert tilt <= math.sqrt(2) * math.pi / 64 + 1e-6


def test_flip_mirrors_coordinates_and_normals():
    sample = make_sample(100)
    before = copy(sample)
    out = RandomFlip(p=1.0, axis_p=1.0)(sample, np.random.default_rng(0))
    sign = np.array([-1, -1, 1], np.float32)
    np.testing.assert_array_equal(out["coord"], before["coord"] * sign)
    np.testing.assert_array_equal(out["normal"], before["normal"] * sign)
    untouched = RandomFlip(p=0.0)(copy(before), np.random.default_rng(0))
    np.testing.assert_array_equal(untouched["coord"], before["coord"])


def _reference_elastic(coord, granularity, magnitude, rng):
    """The original algorithm: box-blur convolutions and RegularGridInterpolator."""
    blur = [np.ones(s, np.float32) / 3 for s in ((3, 1, 1), (1, 3, 1), (1, 1, 3))]
    low = coord.min(0)
    dims = ((coord - low).max(0) // granularity).astype(int) + 3
    noise = rng.standard_normal((3, *dims), dtype=np.float32)
    for _ in range(2):
        for kernel in blur:
            noise = np.stack([scipy.ndimage.convolve(n, kernel, mode="constant", cval=0) for n in noise])
    axes = [np.linspace(lo - granularity, lo + granularity * (d - 2), d) for lo, d in zip(low, dims)]
    interp = RegularGridInterpolator(axes, np.moveaxis(noise, 0, -1), bounds_error=False, fill_value=0)
    return coord + interp(coord) * magnitude


def test_elastic_distortion_matches_reference_and_is_bounded():
    coord = make_sample(2000)["coord"]
    for granularity, magnitude in ((0.2, 0.4), (0.8, 1.6)):
        out = elastic_distortion(coord, granularity, magnitude, np.random.default_rng(4))
        ref = _reference_elastic(coord, granularity, magnitude, np.random.default_rng(4))
        np.testing.assert_allclose(out, ref, atol=1e-5 * magnitude + 1e-6)
        disp = out - coord
        # blurred unit-normal noise has std ~0.11: any displacement component beyond the
        # magnitude would be a > 8-sigma event
        assert 0 < np.abs(disp).max() < magnitude
        # linear in the magnitude for the same noise
        double = elastic_distortion(coord, granularity, 2 * magnitude, np.random.default_rng(4))
        np.testing.assert_allclose(double - coord, 2 * disp, atol=1e-5)
    t = ElasticDistortion(p=0.0)
    np.testing.assert_array_equal(t({"coord": coord.copy()}, np.random.default_rng(0))["coord"], coord)


def test_chromatic_ops_stay_in_range():
    sample = make_sample(2000)
    sample["color"][:500] = 0
    sample["color"][500:1000] = 255
    rng = np.random.default_rng(0)
    dull = {"color": np.random.default_rng(1).uniform(50, 100, (100, 3)).astype(np.float32)}
    stretched = ChromaticAutoContrast(p=1.0, blend_factor=1.0)(dull, rng)["color"]
    np.testing.assert_allclose(stretched.min(0), 0, atol=1e-3)
    np.testing.assert_allclose(stretched.max(0), 255, atol=1e-3)
    for t in (
        ChromaticTranslation(p=1.0, ratio=0.5),
        ChromaticJitter(p=1.0, std=0.5),
    ):
        before = sample["color"].copy()
        sample = t(sample, rng)
        assert sample["color"].dtype == np.float32
        assert sample["color"].min() >= 0 and sample["color"].max() <= 255
        assert not np.array_equal(sample["color"], before)
    flat = {"color": np.full((10, 3), 7, np.float32)}  # constant colour: no division by zero
    assert np.isfinite(ChromaticAutoContrast(p=1.0)(flat, rng)["color"]).all()


def test_normalize_and_features():
    sample = make_sample(10)
    color = sample["color"].copy()
    sample = NormalizeColor()(sample, None)
    np.testing.assert_allclose(sample["color"], color / 255 - 0.5, atol=1e-6)
    out = ToFeature(keys=("color", "normal", "coord"))(sample, None)
    assert out["feat"].shape == (10, 9) and out["feat"].dtype == np.float32
    np.testing.assert_array_equal(out["feat"][:, 3:6], sample["normal"])
    with pytest.raises(KeyError, match="scene0000_00"):
        ToFeature(keys=("height",))(sample, None)


def test_voxelize_transform_keeps_points_and_labels_together():
    sample = make_sample(4000)
    sample = ToFeature()(sample, None)
    base = copy(sample)
    out = Voxelize(voxel_size=0.1, mode="train")(sample, np.random.default_rng(0))
    m = len(out["grid_coord"])
    assert m < 4000
    # every voxel row is one input point: find it by its coordinate and compare every array
    lookup = {tuple(c): i for i, c in enumerate(base["coord"].tolist())}
    rows = np.array([lookup[tuple(c)] for c in out["coord"].tolist()])
    for key in ("segment", "instance", "feat", "normal", "color"):
        np.testing.assert_array_equal(out[key], base[key][rows])
    grid = np.floor((base["coord"] - base["coord"].min(0)) / np.float32(0.1)).astype(np.int32)
    np.testing.assert_array_equal(out["grid_coord"], grid[rows])
    assert len(np.unique(out["grid_coord"], axis=0)) == m

    test = Voxelize(voxel_size=0.1, mode="test", fragments=True)(copy(base), np.random.default_rng(0))
    assert test["num_points"] == 4000 and test["inverse"].shape == (4000,)
    np.testing.assert_array_equal(test["grid_coord"][test["inverse"]], grid)
    np.testing.assert_array_equal(test["origin_segment"], base["segment"])
    for frag in test["fragments"]:
        np.testing.assert_array_equal(grid[frag], test["grid_coord"])
    np.testing.assert_array_equal(test["origin_feat"][test["fragments"][0]], test["feat"])
