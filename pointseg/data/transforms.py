"""Sample transforms: the ScanNet200 baseline augmentations, colour normalisation, features, voxels.

A sample is a dict of per-point numpy arrays (``coord``, ``color``, ``normal``, ``segment``, ...).
Each transform is a small class ``__call__(data, rng) -> data`` that draws all its randomness
from ``rng``, so a sample is a pure function of the scene and the seed. Configs name transforms
through ``TRANSFORMS`` as a list of ``{name: ..., **kwargs}``; ``default_train_transforms()`` and
``default_test_transforms()`` hold the pipelines CeCo trains and evaluates with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from pointseg import meta
from pointseg.data.instance_bank import CLASS_SPECS, InstanceBank, instance_bank, select_classes
from pointseg.data.voxelize import fragments as voxel_fragments
from pointseg.data.voxelize import voxelize_points
from pointseg.utils.schema import check_registry_list

Sample = dict


def _column_min_max(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Per column: NumPy reductions along axis 0 of an (N, 3) array are ~10x slower.
    low = np.array([coord[:, a].min() for a in range(3)], dtype=coord.dtype)
    high = np.array([coord[:, a].max() for a in range(3)], dtype=coord.dtype)
    return low, high


def elastic_distortion(
    coord: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Displace points by a smooth random field (the baseline's elastic distortion).

    As in the original: standard-normal noise on a grid of spacing ``granularity`` covering the
    cloud with one cell of margin, blurred twice along each axis with a 3-tap box filter (zero
    padding), linearly interpolated at every point (zero outside the grid) and scaled by
    ``magnitude``. The interpolation uses ``torch.nn.functional.grid_sample`` (trilinear, zero
    padding, corners aligned): the same values as ``scipy.interpolate.RegularGridInterpolator``
    at ~1/6 of its cost, which keeps one 150 k-point training sample within budget.
    """
    coord = np.asarray(coord, dtype=np.float32)
    low, high = _column_min_max(coord)
    dims = ((high - low) // granularity).astype(np.int64) + 3
    noise = rng.standard_normal((3, *dims.tolist()), dtype=np.float32)
    for _ in range(2):
        for axis in (1, 2, 3):
            noise = scipy.ndimage.uniform_filter1d(noise, 3, axis=axis, mode="constant", cval=0.0)
    # Grid node k of axis a sits at low[a] + (k - 1) * granularity; normalise to [-1, 1].
    # grid_sample reads the last grid dimension as (W, H, D) = (axis 2, axis 1, axis 0).
    origin = low - np.float32(granularity)
    scale = (2.0 / (granularity * (dims - 1))).astype(np.float32)
    normalised = np.empty(coord.shape, dtype=np.float32)
    for axis in range(3):  # column by column, see _column_min_max
        column = normalised[:, 2 - axis]
        np.subtract(coord[:, axis], origin[axis], out=column)
        column *= scale[axis]
        column -= 1.0
    grid = torch.from_numpy(normalised).view(1, 1, 1, -1, 3)
    field = F.grid_sample(
        torch.from_numpy(noise)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    displacement = field.view(3, -1).numpy()
    displacement *= np.float32(magnitude)
    out = coord.copy()  # C order: adding the (3, N) field's transpose would return Fortran order
    for axis in range(3):
        out[:, axis] += displacement[axis]
    return out


class ElasticDistortion:
    """Elastic distortion with each (granularity, magnitude) pair in turn, all with probability p."""

    def __init__(
        self,
        distortion_params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6)),
        p: float = 0.95,
    ) -> None:
        self.distortion_params = [(float(g), float(m)) for g, m in distortion_params]
        self.p = p

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            for granularity, magnitude in self.distortion_params:
                data["coord"] = elastic_distortion(data["coord"], granularity, magnitude, rng)
        return data


def rotation_matrix(angle_x: float, angle_y: float, angle_z: float) -> np.ndarray:
    """Rotation ``R = Rz @ Ry @ Rx`` (radians), float32 (3, 3)."""
    cx, sx = math.cos(angle_x), math.sin(angle_x)
    cy, sy = math.cos(angle_y), math.sin(angle_y)
    cz, sz = math.cos(angle_z), math.sin(angle_z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def _apply_linear(points: np.ndarray, matrix: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """``(points - center) @ matrix.T + center`` for (N, 3) float32, one output column at a time.

    Written out because ``@`` runs NumPy's slow small-matrix loop here and ``np.dot`` goes to a
    multithreaded BLAS that stalls when data-loader workers share the cores.
    """
    points = np.asarray(points, dtype=np.float32)
    columns = [np.ascontiguousarray(points[:, j]) for j in range(3)]
    if center is not None:
        for j in range(3):
            columns[j] -= center[j]
    out = np.empty(points.shape, dtype=np.float32)
    for i in range(3):
        row = columns[0] * matrix[i, 0]
        row += columns[1] * matrix[i, 1]
        row += columns[2] * matrix[i, 2]
        if center is not None:
            row += center[i]
        out[:, i] = row
    return out


class RandomRotate:
    """Rotate about the bounding-box centre by uniform angles about x, y and z (radians).

    Normals rotate with the points. Defaults: z in (-π, π), x and y in (-π/64, π/64).
    """

    def __init__(
        self,
        x: Sequence[float] = (-math.pi / 64, math.pi / 64),
        y: Sequence[float] = (-math.pi / 64, math.pi / 64),
        z: Sequence[float] = (-math.pi, math.pi),
        p: float = 1.0,
    ) -> None:
        self.ranges = [tuple(map(float, r)) for r in (x, y, z)]
        self.p = p

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return data
        angles = [rng.uniform(lo, hi) for lo, hi in self.ranges]
        rot = rotation_matrix(*angles)
        low, high = _column_min_max(data["coord"])
        center = (low + high) / 2
        data["coord"] = _apply_linear(data["coord"], rot, center)
        if "normal" in data:
            data["normal"] = _apply_linear(data["normal"], rot)
        return data


class RandomScale:
    """Scale coordinates by one factor drawn uniformly from ``scale``."""

    def __init__(self, scale: Sequence[float] = (0.9, 1.1), p: float = 1.0) -> None:
        self.scale = tuple(map(float, scale))
        self.p = p

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            data["coord"] = data["coord"] * np.float32(rng.uniform(*self.scale))
        return data


class RandomFlip:
    """With probability p, mirror x and y each with probability ``axis_p`` (normals too).

    A mirror negates the axis; the offset is irrelevant because voxelization subtracts the
    minimum.
    """

    def __init__(self, p: float = 0.95, axis_p: float = 0.5, axes: Sequence[int] = (0, 1)) -> None:
        self.p = p
        self.axis_p = axis_p
        self.axes = tuple(axes)

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return data
        for axis in self.axes:
            if rng.random() < self.axis_p:
                for key in ("coord", "normal"):
                    if key in data:
                        data[key] = data[key].copy()
                        data[key][:, axis] *= -1
        return data


class ChromaticAutoContrast:
    """With probability p, blend colours with their per-channel min-max stretch to 0..255."""

    def __init__(self, p: float = 0.2, blend_factor: float | None = None) -> None:
        self.p = p
        self.blend_factor = blend_factor

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return data
        color = data["color"]
        low, high = _column_min_max(color)
        scale = np.float32(255) / np.maximum(high - low, np.float32(1e-6))
        contrast = (color - low) * scale
        blend = rng.random() if self.blend_factor is None else self.blend_factor
        out = (1 - np.float32(blend)) * color + np.float32(blend) * contrast
        data["color"] = np.clip(out, 0, 255, out=out)
        return data


class ChromaticTranslation:
    """With probability p, add one random rgb offset in ±ratio·255 to all points; clip to 0..255."""

    def __init__(self, p: float = 0.95, ratio: float = 0.1) -> None:
        self.p = p
        self.ratio = ratio

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            shift = ((rng.random(3) - 0.5) * 2 * 255 * self.ratio).astype(np.float32)
            out = data["color"] + shift
            data["color"] = np.clip(out, 0, 255, out=out)
        return data


class ChromaticJitter:
    """With probability p, add per-point Gaussian noise of std ``std``·255; clip to 0..255."""

    def __init__(self, p: float = 0.95, std: float = 0.05) -> None:
        self.p = p
        self.std = std

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            noise = rng.standard_normal(data["color"].shape, dtype=np.float32)
            noise *= np.float32(self.std * 255)
            noise += data["color"]
            data["color"] = np.clip(noise, 0, 255, out=noise)
        return data


class NormalizeColor:
    """Colours 0..255 → rgb/255 − 0.5, the network's input range."""

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        data["color"] = data["color"] * np.float32(1 / 255) - np.float32(0.5)
        return data


class ToFeature:
    """``feat`` float32 (N, C): the concatenation of ``keys`` (from color, normal, coord)."""

    def __init__(self, keys: Sequence[str] = ("color",)) -> None:
        if isinstance(keys, str):
            keys = (keys,)
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("ToFeature: keys must name at least one array")

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        missing = [k for k in self.keys if k not in data]
        if missing:
            raise KeyError(f"ToFeature: scene {data.get('name', '?')!r} has no {missing}")
        parts = [np.asarray(data[k], dtype=np.float32).reshape(len(data[k]), -1) for k in self.keys]
        data["feat"] = np.concatenate(parts, axis=1)
        return data


class Voxelize:
    """Voxelize at ``voxel_size``: every per-point array (first dimension N) becomes per-voxel.

    Adds ``grid_coord`` int32 (M, 3). mode "train": one random point per voxel. mode "test":
    the lowest-index point per voxel, plus ``inverse`` int64 (N,) point → voxel row,
    ``num_points`` N, the original ``origin_coord`` and, for labelled scenes, ``origin_segment``;
    with ``fragments`` also ``fragments`` (list of int64 (M,) point indices, fragment j the
    (j mod count)-th point of each voxel, rows aligned with ``grid_coord``) and ``origin_feat``
    (when ``feat`` exists), so fragment j's features are ``origin_feat[fragments[j]]``.
    A sample holding ``grid_origin`` (3,) is voxelized on the grid of that origin (a chunk of a
    larger scene, on the scene's grid: ``pointseg.evaluation.chunks``); the key is consumed.
    """

    def __init__(self, voxel_size: float = 0.02, mode: str = "train", fragments: bool = False) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"Voxelize: mode must be 'train' or 'test', got {mode!r}")
        if fragments and mode != "test":
            raise ValueError("Voxelize: fragments need mode='test'")
        self.voxel_size = float(voxel_size)
        self.mode = mode
        self.fragments = fragments

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        data = dict(data)
        origin = data.pop("grid_origin", None)
        coord = data["coord"]
        n = coord.shape[0]
        result, grid = voxelize_points(coord, self.voxel_size, self.mode, rng, origin)
        out = {
            k: (v.take(result.index, axis=0) if isinstance(v, np.ndarray) and v.ndim and len(v) == n else v)
            for k, v in data.items()
        }
        out["grid_coord"] = grid
        if self.mode == "test":
            out["inverse"] = result.inverse
            out["num_points"] = n
            out["origin_coord"] = coord
            if "segment" in data:
                out["origin_segment"] = data["segment"]
            if self.fragments:
                out["fragments"] = voxel_fragments(result)
                if "feat" in data:
                    out["origin_feat"] = data["feat"]
        return out


class PasteTailInstances:
    """Tail-instance pasting ([LG] ``sample_tail_instances``; CeCo's "Ins. Samp." row): with
    probability ``probability``, up to ``max_instances`` instances of the ``classes`` drawn from the
    bank of the training scenes (``pointseg.data.instance_bank``) are pasted on free floor of the
    scene, with their colours, normals and class.

    Each instance: a class uniform among the bank's classes, an instance uniform among its
    instances, a yaw uniform in (-π, π) (``rotate``), then up to ``attempts`` positions, each the
    (x, y) of a random floor point (class ``floor``); the first position where no point of the
    scene other than the floor (nor of an instance pasted before) lies within ``margin`` (in x-y,
    so in 3-D too) of any of the instance's points is taken, with the instance's lowest point at
    the floor height (the median z of the floor points). An instance that finds no free position
    is not pasted, and a scene without floor points gets none. ``classes``: ``head`` / ``common``
    / ``tail`` (the ScanNet200 split table), ``quantile`` (present classes with at most the
    ``quantile`` quantile of the training point counts), or a list of class indices.

    Where it differs from [LG] (``add_instances_to_cloud``): [LG] draws the class by a weight file
    and places the box centre at a random (x, y) of the scene's bounding box on a max-filtered
    height map (on top of whatever stands there), rejecting positions whose bounding box meets
    an annotated instance's box, and after ``max_instance_placing_iterations`` (50) failures it
    pastes at the last position anyway; here an instance stands only on free floor or is left
    out, and the freedom test is against every point, not boxes. Every draw comes from ``rng``,
    so a sample stays a pure function of (seed, epoch, index). ``root`` and ``split`` (the training
    data) are filled in by ``build_dataset`` from ``data.root``.
    """

    # Per-point arrays a pasted instance extends; any other per-point array is an error.
    KEYS = ("coord", "color", "normal", "segment", "instance")

    def __init__(
        self,
        classes: str | Sequence[int] = "tail",
        max_instances: int = 5,
        probability: float = 1.0,
        margin: float = 0.05,
        attempts: int = 50,
        rotate: bool = True,
        min_points: int = 20,
        quantile: float = 1 / 3,
        root: str | None = None,
        split: str = "train",
    ) -> None:
        if isinstance(classes, str) and classes not in CLASS_SPECS:
            raise ValueError(f"classes must be one of {list(CLASS_SPECS)} or a list of class indices, got {classes!r}")
        if not isinstance(classes, str):
            classes = select_classes(list(classes))
        if int(max_instances) < 1 or int(attempts) < 1 or int(min_points) < 1:
            raise ValueError("max_instances, attempts and min_points must be >= 1")
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not float(margin) >= 0.0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not 0.0 < float(quantile) <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.classes = classes
        self.max_instances, self.attempts, self.min_points = int(max_instances), int(attempts), int(min_points)
        self.probability, self.margin, self.quantile = float(probability), float(margin), float(quantile)
        self.rotate = bool(rotate)
        self.root, self.split = root, split
        self._class_ids: tuple[int, ...] | None = None
        self._floor = meta.class_table().name.index("floor")

    def bank(self) -> InstanceBank:
        """The bank (built or read once per process; kept out of the transform, so that pickling
        the pipeline for a loader worker never copies it)."""
        if self.root is None:
            raise ValueError("PasteTailInstances: root (the data folder) is not set; build_dataset sets it from data.root")
        if self._class_ids is None:
            self._class_ids = select_classes(self.classes, self.root, self.split, self.quantile)
        return instance_bank(self.root, self.split, self._class_ids, self.min_points)

    def _check(self, data: Sample) -> int:
        n = len(data["coord"])
        name = data.get("name", "?")
        if "segment" not in data:
            raise ValueError(f"PasteTailInstances: scene {name!r} has no labels (a training transform)")
        for k, v in data.items():
            if isinstance(v, np.ndarray) and v.ndim and len(v) == n and k not in self.KEYS:
                raise ValueError(
                    f"PasteTailInstances: scene {name!r} has the per-point array {k!r}, which a pasted "
                    "instance cannot extend; put PasteTailInstances before ToFeature and Voxelize"
                )
        return n

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.probability:
            return data
        self._check(data)
        floor = np.flatnonzero(data["segment"] == self._floor)
        if floor.size == 0:
            return data
        bank = self.bank()
        coord = data["coord"]
        height = float(np.median(coord[floor, 2]))
        others = np.flatnonzero(data["segment"] != self._floor)
        # scipy's k-d tree answers "is any point within the margin" exactly; occupancy grids would round it.
        obstacles = [cKDTree(coord[others, :2])] if others.size else []
        classes = bank.classes
        pasted: list[tuple[int, dict[str, np.ndarray]]] = []
        for _ in range(self.max_instances):
            cls = int(classes[rng.integers(classes.size)])
            members = bank.of_class(cls)
            inst = bank.instance(int(members[rng.integers(members.size)]))
            if self.rotate:
                rot = rotation_matrix(0.0, 0.0, rng.uniform(-math.pi, math.pi))
                inst["coord"] = _apply_linear(inst["coord"], rot)
                inst["normal"] = _apply_linear(inst["normal"], rot)
            for _ in range(self.attempts):
                x, y = coord[floor[rng.integers(floor.size)], :2]
                xy = inst["coord"][:, :2] + np.array([x, y], dtype=np.float32)
                if all(np.isinf(tree.query(xy, distance_upper_bound=self.margin)[0]).all() for tree in obstacles):
                    inst["coord"][:, :2] = xy
                    inst["coord"][:, 2] += np.float32(height)
                    obstacles.append(cKDTree(xy))
                    pasted.append((cls, inst))
                    break
        return _append_instances(data, pasted) if pasted else data


def _append_instances(data: Sample, pasted: list[tuple[int, dict[str, np.ndarray]]]) -> Sample:
    """``data`` with the pasted instances' points appended: their class as ``segment``, new ids
    after the scene's as ``instance``."""
    sizes = [len(inst["coord"]) for _, inst in pasted]
    out = dict(data)
    for key in ("coord", "color", "normal"):
        if key in data:
            out[key] = np.concatenate([data[key], *(inst[key].astype(data[key].dtype) for _, inst in pasted)])
    labels = np.repeat(np.array([cls for cls, _ in pasted], dtype=np.int64), sizes)
    out["segment"] = np.concatenate([data["segment"], labels.astype(data["segment"].dtype)])
    if "instance" in data:
        first = int(data["instance"].max(initial=-1)) + 1
        ids = np.repeat(np.arange(first, first + len(pasted), dtype=np.int64), sizes)
        out["instance"] = np.concatenate([data["instance"], ids.astype(data["instance"].dtype)])
    return out


# name → class, the names a config may use
TRANSFORMS: dict[str, Callable[..., Any]] = {
    "ElasticDistortion": ElasticDistortion,
    "RandomRotate": RandomRotate,
    "RandomScale": RandomScale,
    "RandomFlip": RandomFlip,
    "ChromaticAutoContrast": ChromaticAutoContrast,
    "ChromaticTranslation": ChromaticTranslation,
    "ChromaticJitter": ChromaticJitter,
    "NormalizeColor": NormalizeColor,
    "ToFeature": ToFeature,
    "Voxelize": Voxelize,
    "PasteTailInstances": PasteTailInstances,
}


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Iterable[Callable[[Sample, np.random.Generator], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            data = t(data, rng)
        return data

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"


def to_container(cfg: Any) -> Any:
    """A DictConfig / ListConfig as plain containers (no-op for plain ones)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # omegaconf is a dependency; keep plain dicts working without it
        pass
    return cfg


def check_transforms(items: Any) -> str | None:
    """What is wrong with a ``[{name, **kwargs}, ...]`` pipeline, or None."""
    return check_registry_list(to_container(items), TRANSFORMS)


def build_transforms(cfg: Sequence[Mapping[str, Any]] | Any) -> Compose:
    """``Compose`` from a list of ``{name: ..., **kwargs}`` (plain or OmegaConf)."""
    items = to_container(cfg) or []
    problem = check_transforms(items)
    if problem:
        raise ValueError(f"transforms{problem}" if problem.startswith("[") else f"transforms: {problem}")
    transforms = []
    for i, item in enumerate(items):
        kwargs = dict(item)
        name = kwargs.pop("name")
        try:
            transforms.append(TRANSFORMS[name](**kwargs))
        except (TypeError, ValueError) as e:
            raise ValueError(f"transforms[{i}] ({name}): {e}") from e
    return Compose(transforms)


def default_train_transforms(voxel_size: float = 0.02, features: Sequence[str] = ("color",)) -> list[dict]:
    """The training pipeline of the ScanNet200 baseline CeCo trains with."""
    return [
        {"name": "ElasticDistortion", "distortion_params": [[0.2, 0.4], [0.8, 1.6]], "p": 0.95},
        {
            "name": "RandomRotate",
            "x": [-math.pi / 64, math.pi / 64],
            "y": [-math.pi / 64, math.pi / 64],
            "z": [-math.pi, math.pi],
        },
        {"name": "RandomScale", "scale": [0.9, 1.1]},
        {"name": "RandomFlip", "p": 0.95, "axis_p": 0.5},
        {"name": "ChromaticAutoContrast", "p": 0.2},
        {"name": "ChromaticTranslation", "p": 0.95, "ratio": 0.1},
        {"name": "ChromaticJitter", "p": 0.95, "std": 0.05},
        {"name": "NormalizeColor"},
        {"name": "ToFeature", "keys": list(features)},
        {"name": "Voxelize", "voxel_size": voxel_size, "mode": "train"},
    ]


def default_test_transforms(voxel_size: float = 0.02, features: Sequence[str] = ("color",)) -> list[dict]:
    """The evaluation pipeline: no augmentation, test-mode voxelization."""
    return [
        {"name": "NormalizeColor"},
        {"name": "ToFeature", "keys": list(features)},
        {"name": "Voxelize", "voxel_size": voxel_size, "mode": "test"},
    ]
