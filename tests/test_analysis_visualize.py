"""Scene colouring, error maps, PLY round trip, the headless PNG and the CLI's error messages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pointseg.analysis.visualize import (
    ERROR_COLORS,
    ERROR_CORRECT,
    ERROR_IGNORED,
    ERROR_WRONG,
    error_codes,
    label_colors,
    read_ply_points,
    read_predictions_txt,
    render_scene_png,
    write_ply,
)
from pointseg.meta import class_table
from pointseg.utils.io import save_npy

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """The command behind ``tools/<name>.py``."""
    return importlib.import_module(f"pointseg.cli.{name}")


def small_room(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Floor (class 2), a wall (class 0) and a box (class 5), 5% unlabelled."""
    rng = np.random.default_rng(seed)
    k = n // 3
    floor = np.c_[rng.uniform(0, 4, k), rng.uniform(0, 3, k), np.zeros(k)]
    wall = np.c_[rng.uniform(0, 4, k), np.zeros(k), rng.uniform(0, 2.5, k)]
    box = np.c_[rng.uniform(1, 2, k), rng.uniform(1, 2, k), rng.uniform(0, 0.8, k)]
    coord = np.concatenate([floor, wall, box]).astype(np.float32)
    gt = np.repeat([2, 0, 5], k)
    gt[rng.random(len(gt)) < 0.05] = -1
    return coord, gt


def test_label_colors_use_the_scannet200_palette_and_black_for_ignored():
    table = class_table()
    colors = label_colors(np.array([0, 199, -1, 57]))
    np.testing.assert_array_equal(colors[[0, 1, 3]], table.color[[0, 199, 57]])
    np.testing.assert_array_equal(colors[2], [0, 0, 0])
    assert colors.dtype == np.uint8


def test_error_map_logic():
    gt = np.array([3, 3, -1, -1, 7, 7])
    pred = np.array([3, 4, 3, -1, -1, 7])
    np.testing.assert_array_equal(
        error_codes(gt, pred), [ERROR_CORRECT, ERROR_WRONG, ERROR_IGNORED, ERROR_IGNORED, ERROR_WRONG, ERROR_CORRECT]
    )
    np.testing.assert_array_equal(ERROR_COLORS[ERROR_IGNORED], [0, 0, 0])
    with pytest.raises(ValueError, match="3 points, prediction 2"):
        error_codes(gt[:3], pred[:2])


def test_ply_round_trip_keeps_coordinates_and_colours(tmp_path):
    coord, gt = small_room(300)
    colors = label_colors(gt)
    write_ply(tmp_path / "s.ply", coord, colors)
    c2, col2 = read_ply_points(tmp_path / "s.ply")
    np.testing.assert_array_equal(c2, coord)
    np.testing.assert_array_equal(col2, colors)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary behind


@pytest.mark.parametrize("view", ["top", "oblique"])
def test_png_is_written_and_shows_the_classes(tmp_path, view):
    coord, gt = small_room()
    pred = gt.copy()
    pred[coord[:, 2] > 2.0] = 7  # top of the wall predicted wrong
    path = render_scene_png(coord, gt, pred, tmp_path / "s.png", title="room", view=view, max_points=2000)
    img = (imread(path)[..., :3] * 255).round().astype(int)
    assert img.shape[1] > img.shape[0]  # three panels side by side
    packed = np.unique(img.reshape(-1, 3) @ np.array([65536, 256, 1]))  # 1-D unique is fast
    colors = np.stack([packed // 65536, packed // 256 % 256, packed % 256], axis=1)
    table = class_table()
    near = lambda target: np.abs(colors - np.asarray(target, dtype=int)).max(axis=1).min() <= 3  # noqa: E731
    for cls in (0, 2, 5, 7):
        assert near(tuple(table.color[cls])), f"class {cls} colour missing"
    assert near(tuple(ERROR_COLORS[ERROR_WRONG])) and near(tuple(ERROR_COLORS[ERROR_CORRECT]))
    with pytest.raises(ValueError, match="unknown view"):
        render_scene_png(coord, gt, pred, tmp_path / "x.png", view="side")


def write_scene(root: Path, split: str, scene: str, coord: np.ndarray, gt: np.ndarray) -> None:
    save_npy(root / split / scene / "coord.npy", coord)
    save_npy(root / split / scene / "segment200.npy", gt.astype(np.int16))


def test_predictions_file_round_trip_and_errors(tmp_path):
    ids = class_table().scannet_id
    pred = np.array([0, 5, 199, 5])
    f = tmp_path / "s.txt"
    f.write_text("".join(f"{ids[p]}\n" for p in pred))
    np.testing.assert_array_equal(read_predictions_txt(f, 4), pred)
    with pytest.raises(ValueError, match=r"s.txt: 4 lines, but the scene has 5 vertices"):
        read_predictions_txt(f, 5)
    with pytest.raises(FileNotFoundError, match=r"missing.txt: predictions file not found"):
        read_predictions_txt(tmp_path / "missing.txt", 4)
    f.write_text("1\n2\nthree\n4\n")
    with pytest.raises(ValueError, match=r"s.txt.*not an integer"):
        read_predictions_txt(f, 4)
    f.write_text(f"{ids[0]}\n0\n")  # 0 is unannotated, not a class: shown as wrong
    with pytest.warns(UserWarning, match="not ScanNet200 classes"):
        np.testing.assert_array_equal(read_predictions_txt(f, 2), [0, -1])


def test_cli_writes_plys_and_png_and_names_bad_files(tmp_path, capsys):
    coord, gt = small_room(900)
    write_scene(tmp_path / "data", "val", "scene0001_00", coord, gt)
    preds = tmp_path / "run" / "predictions"
    preds.mkdir(parents=True)
    pred = np.where(gt < 0, 0, gt)
    (preds / "scene0001_00.txt").write_text("\n".join(map(str, class_table().scannet_id[pred])) + "\n")
    tool = load_tool("visualize")
    base = ["--data", str(tmp_path / "data"), "--split", "val", "--scene", "scene0001_00", "--out", str(tmp_path / "out")]
    assert tool.main([*base, "--predictions", str(preds)]) == 0
    for suffix in ("_gt.ply", "_pred.ply", "_error.ply", ".png"):
        assert (tmp_path / "out" / f"scene0001_00{suffix}").is_file()
    _, err_colors = read_ply_points(tmp_path / "out" / "scene0001_00_error.ply")
    np.testing.assert_array_equal(err_colors[gt < 0], np.zeros(((gt < 0).sum(), 3)))
    np.testing.assert_array_equal(err_colors[gt >= 0], np.tile(ERROR_COLORS[ERROR_CORRECT], ((gt >= 0).sum(), 1)))

    (preds / "scene0001_00.txt").write_text("1\n" * 10)  # short file
    assert tool.main([*base, "--predictions", str(preds)]) == 2
    assert "scene0001_00.txt: 10 lines, but the scene has 900 vertices" in capsys.readouterr().err
    assert tool.main([*base, "--predictions", str(tmp_path / "nowhere")]) == 2
    assert "nowhere/scene0001_00.txt: predictions file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_predicts_with_a_checkpoint(tmp_path):
    from engine_helpers import make_tiny_run

    from pointseg.data import grid_coordinates, voxelize

    data, ckpts, seg = make_tiny_run(tmp_path)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--split", "val", "--scene", "scene0000_00", "--checkpoint", str(ckpts[0])]
    assert load_tool("visualize").main([*argv, "--out", str(out), "--view", "oblique"]) == 0
    coord, pred_colors = read_ply_points(out / "scene0000_00_pred.ply")
    assert len(coord) == len(seg)
    # Without TTA every point takes its voxel's prediction: one colour per voxel.
    grid = grid_coordinates(coord, 0.04)  # the synthetic config's voxel size
    inverse = voxelize(grid, mode="test").inverse
    first = np.zeros((inverse.max() + 1, 3), dtype=np.uint8)
    first[inverse[::-1]] = pred_colors[::-1]
    np.testing.assert_array_equal(pred_colors, first[inverse])
    assert (out / "scene0000_00.png").stat().st_size > 10_000
