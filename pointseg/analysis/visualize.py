"""Coloured point clouds and headless pictures of a scene's ground truth, prediction and errors.

PLY files (plyfile, binary) open in MeshLab, CloudCompare and open3d. The PNG is drawn with
matplotlib's Agg canvas so it works on servers without a display; open3d is only needed for the
interactive ``--show`` window and is imported there, lazily.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from pointseg.data.scene import COORD_FILE, check_folder_name, load_scene, scene_dir
from pointseg.meta import IGNORE_INDEX, NUM_CLASSES, class_table
from pointseg.utils.io import atomic_path
from pointseg.utils.plotting import new_figure, save_figure

IGNORED_COLOR = (0, 0, 0)
# Error map codes and their colours.
ERROR_IGNORED, ERROR_CORRECT, ERROR_WRONG = 0, 1, 2
ERROR_COLORS = np.array([IGNORED_COLOR, (60, 170, 80), (220, 40, 40)], dtype=np.uint8)
VIEWS = ("top", "oblique")


def label_colors(labels: np.ndarray) -> np.ndarray:
    """uint8 (N, 3) ScanNet200 colours of class indices; −1 (or anything outside 0..199) is black."""
    labels = np.asarray(labels, dtype=np.int64)
    palette = np.concatenate([class_table().color, np.array([IGNORED_COLOR], dtype=np.uint8)])
    idx = np.where((labels >= 0) & (labels < NUM_CLASSES), labels, NUM_CLASSES)
    return palette[idx]


def error_codes(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per point: ignored (ground truth −1), correct, or wrong (a −1 prediction is wrong)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.shape[0]} points, prediction {pred.shape[0]}")
    codes = np.where(gt == pred, ERROR_CORRECT, ERROR_WRONG).astype(np.int8)
    codes[gt == IGNORE_INDEX] = ERROR_IGNORED
    return codes


def error_colors(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return ERROR_COLORS[error_codes(gt, pred)]


def write_ply(path: str | os.PathLike, coord: np.ndarray, color: np.ndarray) -> None:
    """Binary PLY with float32 x, y, z and uchar red, green, blue per vertex, written atomically."""
    coord = np.asarray(coord, dtype=np.float32)
    color = np.asarray(color, dtype=np.uint8)
    if coord.ndim != 2 or coord.shape[1] != 3 or color.shape != coord.shape:
        raise ValueError(f"{path}: need coord (N,3) and color (N,3), got {coord.shape} and {color.shape}")
    vertex = np.empty(
        len(coord), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = coord[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = color[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(tmp))


def read_ply_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(coord float32 (N,3), color uint8 (N,3)) of a PLY written by :func:`write_ply`."""
    v = PlyData.read(str(path))["vertex"]
    coord = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    color = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
    return coord, color


def load_scene_labels(data_root: str | os.PathLike, split: str, scene: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertex coordinates and ground truth (``None`` for unlabelled scenes) of ``DATA/<split>/<scene>``."""
    folder = scene_dir(data_root, split, scene)
    if not (folder / COORD_FILE).is_file():
        raise FileNotFoundError(f"{folder / COORD_FILE}: scene not found")
    data = load_scene(folder)
    return data["coord"], data.get("segment")


def read_predictions_txt(path: str | os.PathLike, num_points: int) -> np.ndarray:
    """Class indices from a submission-format ``<scene>.txt`` (one ScanNet200 id per vertex).

    A missing file, a line that is not an integer, or a line count other than ``num_points`` is
    an error naming the file; ids outside the 200 classes become −1 (shown as wrong) with a warning.
    """
    from pointseg.evaluation.submission import parse_prediction_text

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    ids, problems = parse_prediction_text(path.read_text(encoding="utf-8"), str(path))
    if ids is None:
        raise ValueError(problems[0])
    if ids.shape[0] != num_points:
        raise ValueError(f"{path}: {ids.shape[0]} lines, but the scene has {num_points} vertices")
    pred = class_table().to_index(ids)
    if (pred == IGNORE_INDEX).any():
        warnings.warn(f"{path}: {int((pred == IGNORE_INDEX).sum())} ids are not ScanNet200 classes")
    return pred


def _project(coord: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray]:
    """2-D screen coordinates and a drawing order (far points first, so near ones cover them)."""
    c = coord - coord.mean(axis=0)
    if view == "top":
        return c[:, :2], np.argsort(c[:, 2], kind="stable")  # highest drawn last
    azim, elev = np.deg2rad(-35.0), np.deg2rad(35.0)
    x = c[:, 0] * np.cos(azim) - c[:, 1] * np.sin(azim)
    y = c[:, 0] * np.sin(azim) + c[:, 1] * np.cos(azim)
    up = y * np.sin(elev) + c[:, 2] * np.cos(elev)
    depth = y * np.cos(elev) - c[:, 2] * np.sin(elev)
    return np.stack([x, up], axis=1), np.argsort(-depth, kind="stable")


def render_scene_png(
    coord: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    path: str | os.PathLike,
    title: str | None = None,
    view: str = "top",
    max_points: int = 150_000,
    seed: int = 0,
) -> Path:
    """Ground truth, prediction and error map side by side in one PNG (panels for what is given).

    Scenes larger than ``max_points`` are drawn from a seeded random subset; the marker size
    shrinks with the number of points drawn so that surfaces look closed but not smeared.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    coord = np.asarray(coord, dtype=np.float64)
    panels: list[tuple[str, np.ndarray]] = []
    if gt is not None:
        panels.append(("ground truth", label_colors(gt)))
    if pred is not None:
        panels.append(("prediction", label_colors(pred)))
    if gt is not None and pred is not None:
        codes = error_codes(gt, pred)
        scored = codes != ERROR_IGNORED
        acc = (codes[scored] == ERROR_CORRECT).mean() if scored.any() else float("nan")
        panels.append((f"errors (green correct, red wrong; acc {acc:.1%})", ERROR_COLORS[codes]))
    if not panels:
        raise ValueError("render_scene_png needs gt, pred or both")
    for name, colors in panels:
        if len(colors) != len(coord):
            raise ValueError(f"{name}: {len(colors)} labels for {len(coord)} points")

    keep = np.arange(len(coord))
    if len(coord) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(coord), max_points, replace=False))
    xy, order = _project(coord[keep], view)
    xy = xy[order]
    size = float(np.clip(1.2e5 / max(len(keep), 1), 0.3, 40.0))

    span = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    aspect = float(span[1] / span[0]) if span[0] > 0 else 1.0
    panel_w = 5.0
    fig = new_figure(panel_w * len(panels), float(np.clip(panel_w * aspect, 2.5, 8.0)) + 0.6, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, colors) in zip(axes, panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=colors[keep][order] / 255.0, s=size, marker=".", linewidths=0, rasterized=True)
        ax.set_title(name, fontsize=10)
        ax.set_aspect("equal")
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=120)
    return Path(path)


def write_scene_outputs(
    out_dir: str | os.PathLike,
    scene: str,
    coord: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    view: str = "top",
) -> dict[str, Path]:
    """``<scene>_gt.ply``, ``<scene>_pred.ply``, ``<scene>_error.ply`` (what applies) and ``<scene>.png``,
    all inside ``out_dir`` (``scene`` must be a scene name, not a path)."""
    out = Path(out_dir)
    check_folder_name(scene)
    written: dict[str, Path] = {}
    if gt is not None:
        written["gt"] = out / f"{scene}_gt.ply"
        write_ply(written["gt"], coord, label_colors(gt))
    if pred is not None:
        written["pred"] = out / f"{scene}_pred.ply"
        write_ply(written["pred"], coord, label_colors(pred))
    if gt is not None and pred is not None:
        written["error"] = out / f"{scene}_error.ply"
        write_ply(written["error"], coord, error_colors(gt, pred))
    written["png"] = render_scene_png(coord, gt, pred, out / f"{scene}.png", title=scene, view=view)
    return written


def show_open3d(coord: np.ndarray, colorings: dict[str, np.ndarray]) -> None:
    """Interactive open3d window with each colouring of the scene placed side by side along x."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("--show needs a display (DISPLAY is not set); the PLY and PNG files are written")
    try:
        import open3d as o3d
    except ImportError as e:
        raise RuntimeError("--show needs open3d: pip install 'pointseg[viz]'") from e
    coord = np.asarray(coord, dtype=np.float64)
    shift = np.ptp(coord[:, 0]) * 1.1 if len(coord) else 0.0
    clouds = []
    for i, colors in enumerate(colorings.values()):
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(coord + [i * shift, 0.0, 0.0]))
        pc.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=np.float64) / 255.0)
        clouds.append(pc)
    o3d.visualization.draw_geometries(clouds, window_name=" | ".join(colorings))


def predict_vertices(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    split: str,
    scene: str,
    overrides: tuple[str, ...] | list[str] = (),
    device: str = "cpu",
    data_cfg=None,
) -> np.ndarray:
    """Class index per vertex of one scene from a checkpoint (no TTA): for a quick look.

    The same prediction path as ``tools/test.py`` (``evaluation.inference.predict_scene``), through
    the dataset's test pipeline without fragments: every vertex takes its voxel's arg-max class
    through the inverse map. Benchmark numbers come from ``tools/test.py``, which adds fragments,
    TTA and ensembles. The data settings are the checkpoint's stored ones unless ``data_cfg`` (a
    ``data`` config section) is given; the root is always ``data_root``.
    """
    from pointseg.data import build_dataset
    from pointseg.data.scene import load_scene
    from pointseg.data.transforms import to_container
    from pointseg.engine.checkpoint import load_for_inference
    from pointseg.evaluation.inference import predict_scene
    from pointseg.evaluation.label_map import check_label_set

    model, cfg = load_for_inference(checkpoint, overrides, device=device)
    check_label_set(checkpoint, int(cfg.model.num_classes), None)  # colours are ScanNet200 classes
    data_cfg = dict(to_container(cfg.data if data_cfg is None else data_cfg), root=str(data_root))
    dataset = build_dataset(data_cfg, split, mode="test")
    if scene not in dataset.names:
        raise FileNotFoundError(f"{Path(data_root) / split / scene}: scene not found")
    i = dataset.names.index(scene)
    data = load_scene(Path(data_root) / split / scene)
    prob = predict_scene([model], data, dataset.transforms, num_classes=int(cfg.model.num_classes),
                         device=device, rng=dataset.rng(i))
    return prob.argmax(dim=1).cpu().numpy()
