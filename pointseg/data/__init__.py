"""Scene loading, transforms, voxelization, dataset and collate (see docs/design.md)."""

from pointseg.data.collate import collate
from pointseg.data.dataset import ScanNet200Dataset, build_dataset
from pointseg.data.scene import load_scene
from pointseg.data.transforms import (
    TRANSFORMS,
    Compose,
    build_transforms,
    default_test_transforms,
    default_train_transforms,
)
from pointseg.data.voxelize import VoxelizeResult, fragments, grid_coordinates, voxelize, voxelize_points

__all__ = [
    "TRANSFORMS",
    "Compose",
    "ScanNet200Dataset",
    "VoxelizeResult",
    "build_dataset",
    "build_transforms",
    "collate",
    "default_test_transforms",
    "default_train_transforms",
    "fragments",
    "grid_coordinates",
    "load_scene",
    "voxelize",
    "voxelize_points",
]
