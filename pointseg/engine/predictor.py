"""Everything prediction needs, read from the checkpoint alone, and a scan turned into its input.

A training checkpoint stores its resolved config: the backbone and label space (``model.name``,
``model.num_classes``), the voxel size, the input features and their normalisation (the test
pipeline, ``data.test_transforms`` or the default one). That is all ``pointseg-predict`` reads;
the class table (names, ScanNet ids, colours) is ScanNet200's, shipped with the package. A
checkpoint whose stored config lacks one of ``REQUIRED_KEYS`` is refused with the key named,
unless ``--config`` gives the config it was trained with.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pointseg.data.dataset import pipeline
from pointseg.data.scan_frame import to_scannet_frame, up_to_z, warn_units
from pointseg.data.scan_io import Scan
from pointseg.data.transforms import Compose
from pointseg.datasets import DatasetSpec, default_spec, spec_of
from pointseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from pointseg.engine.config import compose, file_layers, to_plain_dict
from pointseg.engine.ensemble import check_members
from pointseg.evaluation.label_map import check_label_set
from pointseg.preprocessing.normals import normalize, vertex_normals

log = logging.getLogger(__name__)

# Keys of a checkpoint's stored config that prediction cannot do without (the schema's defaults
# would silently stand in for them otherwise).
REQUIRED_KEYS = ("model.name", "model.num_classes", "data.voxel_size", "data.features")
# Colour given to a scan without one (--no-color): mid-grey, which NormalizeColor maps to a zero
# colour input, the centre of the range the network was trained on.
NEUTRAL_COLOR = 127.5
# ScanNet id written for a point that could not be predicted (non-finite): ScanNet's "unannotated".
UNLABELLED_ID = 0
# A data.root for configs that lack one: prediction reads no dataset folder.
_NO_ROOT = {"data": {"root": "(not read by pointseg-predict)"}}


def _has(config: dict, key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@dataclass
class Predictor:
    """The models of one or more checkpoints (an ensemble), the config they share, and the test
    pipeline (without fragments) that turns a scan into their input."""

    models: list[torch.nn.Module]
    cfg: Any
    transforms: Compose
    label_map: np.ndarray | None = None

    @property
    def voxel_size(self) -> float:
        return float(self.cfg.data.voxel_size)

    @property
    def features(self) -> list[str]:
        return list(self.cfg.data.features)

    @property
    def num_classes(self) -> int:
        return int(self.cfg.model.num_classes)

    @property
    def spec(self) -> DatasetSpec:
        """The label space the models' config trained on (``data.dataset`` / ``data.classes``)."""
        return spec_of(self.cfg.data)

    def scannet200_index(self, model_class: np.ndarray) -> np.ndarray:
        """Class index of the dataset (ScanNet200's 0..199 by default) of each model class index."""
        return model_class if self.label_map is None else self.label_map[model_class]


def _config_file(path: str | os.PathLike, overrides: Sequence[str]) -> dict:
    return to_plain_dict(compose([("pointseg-predict", _NO_ROOT), *file_layers(path)], overrides)[0])


def load_predictor(
    checkpoints: Sequence[str | os.PathLike],
    config: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    label_map: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> Predictor:
    """The models of ``checkpoints`` voting as an ensemble, from their stored configs; ``config``
    (a YAML file) stands in for the stored config of checkpoints that lack a ``REQUIRED_KEYS``
    entry. All members must agree on the settings of ``engine.ensemble.MUST_MATCH``."""
    if not checkpoints:
        raise ValueError("no checkpoint given")
    from_file = _config_file(config, overrides) if config else None
    models, cfgs = [], []
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        stored = ckpt["config"]
        if not isinstance(stored, dict):
            raise ValueError(f"{path}: not a pointseg checkpoint (its 'config' is not a mapping)")
        missing = [k for k in REQUIRED_KEYS if not _has(stored, k)]
        if missing and from_file is None:
            raise ValueError(
                f"{path}: the checkpoint's stored config has no {', '.join(missing)} (an older checkpoint?); "
                "give the config it was trained with: --config CONFIG.yaml"
            )
        if missing:
            stored = from_file
        else:
            stored = copy.deepcopy(stored)
            stored.setdefault("data", {}).setdefault("root", _NO_ROOT["data"]["root"])
        model, cfg = model_from_checkpoint({**ckpt, "config": stored}, path, overrides, device)
        models.append(model)
        cfgs.append(cfg)
    check_members(checkpoints, cfgs, cfgs[0])
    cfg = cfgs[0]
    check_label_set(checkpoints[0], int(cfg.model.num_classes), label_map, spec_of(cfg.data))
    return Predictor(models, cfg, pipeline(cfg.data, "test", fragments=False), label_map)


@dataclass
class ScanInput:
    """A scan as the network's input: ``data`` (per-point ``coord`` metres z-up float32,
    ``color`` 0..255, ``normal`` when the model reads normals) for the points in ``keep``, and
    what was done to get there."""

    data: dict
    keep: np.ndarray
    dropped: int
    neutral_color: bool
    units_warning: str | None


def scan_input(scan: Scan, predictor: Predictor, up: str = "z", units: str = "m", no_color: bool = False) -> ScanInput:
    """Bring ``scan`` to ScanNet's frame and to the features the checkpoint was trained with.

    Points with a non-finite coordinate (or colour, or normal) are dropped and counted. A scan
    without colour is refused when the model reads colour, unless ``no_color``: then every point
    gets ``NEUTRAL_COLOR`` and a warning says that accuracy suffers.
    """
    path = scan.path
    keep = np.isfinite(scan.coord).all(axis=1)
    for extra in (scan.color, scan.normal):
        if extra is not None:
            keep &= np.isfinite(extra).all(axis=1)
    dropped = int((~keep).sum())
    if dropped == scan.num_points:
        raise ValueError(f"{path}: none of its {scan.num_points} points has finite coordinates")
    if dropped:
        log.warning("%s: %d of %d points have non-finite values (NaN / inf) and are dropped (label %d)",
                    path, dropped, scan.num_points, UNLABELLED_ID)
    all_kept = dropped == 0
    coord = to_scannet_frame(scan.coord if all_kept else scan.coord[keep], up, units)
    hint = warn_units(path, coord, units)
    n = len(coord)
    data: dict = {"coord": coord, "name": path.stem}
    neutral = scan.color is None
    if neutral:
        if "color" in predictor.features and not no_color:
            raise ValueError(
                f"{path}: the scan has no colour but the model was trained with colour input; "
                "give --no-color to predict from geometry alone (less accurate)"
            )
        if "color" in predictor.features:
            log.warning("%s: no colour: every point gets a neutral grey (%g), the model's accuracy will suffer",
                        path, NEUTRAL_COLOR)
        data["color"] = np.full((n, 3), NEUTRAL_COLOR, dtype=np.float32)
    else:
        data["color"] = np.ascontiguousarray(scan.color if all_kept else scan.color[keep], dtype=np.float32)
    if "normal" in predictor.features:
        data["normal"] = _normals(scan, keep, coord, up)
    return ScanInput(data, keep, dropped, neutral, hint)


def _normals(scan: Scan, keep: np.ndarray, coord: np.ndarray, up: str) -> np.ndarray:
    """Unit normals in the scan's z-up frame: the file's own, or a mesh's area-weighted vertex
    normals; a point cloud without normals cannot feed a model that reads them."""
    if scan.normal is not None:
        return normalize(up_to_z(np.asarray(scan.normal, dtype=np.float64)[keep], up))
    if scan.faces is not None:
        kept_faces = scan.faces[keep[scan.faces].all(axis=1)]  # a dropped corner spoils its faces
        return vertex_normals(coord, (np.cumsum(keep) - 1)[kept_faces])
    raise ValueError(
        f"{scan.path}: the model reads normals (data.features has 'normal') but the scan has none "
        "(no nx ny nz, and no triangle faces to compute them from)"
    )


def scannet_labels(predictor: Predictor, model_class: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark id (int32; the ScanNet id for ScanNet200, the NYU40 id for ScanNet20) and class
    colour (uint8 RGB) of every point of the scan, from the model class of its kept points;
    dropped points get ``UNLABELLED_ID`` and black."""
    spec = predictor.spec
    index = predictor.scannet200_index(np.asarray(model_class))
    ids = np.full(len(keep), UNLABELLED_ID, dtype=np.int32)
    colors = np.zeros((len(keep), 3), dtype=np.uint8)
    ids[keep] = spec.ids[index]
    colors[keep] = spec.colors[index]
    return ids, colors


def class_counts(ids: np.ndarray, spec: DatasetSpec | None = None) -> list[dict]:
    """Per predicted class ``{"id", "name", "points"}``, most points first (unlabelled points,
    ``UNLABELLED_ID``, as "unlabelled"); names of ``spec`` (default ScanNet200)."""
    spec = default_spec() if spec is None else spec
    name_of = dict(zip(spec.ids.tolist(), spec.names))
    values, counts = np.unique(ids, return_counts=True)
    rows = [{"id": int(v), "name": name_of.get(int(v), "unlabelled"), "points": int(c)} for v, c in zip(values, counts)]
    return sorted(rows, key=lambda r: (-r["points"], r["id"]))

