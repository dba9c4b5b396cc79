"""ScanNet200 dataset over ``DATA/<split>/<scene>/`` and ``build_dataset`` from the config.

``data_cfg`` keys read by ``build_dataset`` (a plain dict or an OmegaConf DictConfig):

- ``root`` (required): the preprocessed data folder holding ``train/``, ``val/``, ``test/``.
- ``voxel_size`` (default 0.02 m): fills ``Voxelize`` entries that do not set ``voxel_size``.
- ``features`` (default ``["color"]``; any of color / normal / coord): fills ``ToFeature``
  entries that do not set ``keys``.
- ``train_transforms`` / ``test_transforms``: lists of ``{name, ...}`` (see
  ``pointseg.data.transforms.TRANSFORMS``); missing or null → ``default_train_transforms()`` /
  ``default_test_transforms()``.
- ``seed`` (default 0): base of the per-sample seeds.
- ``loop`` (default 1): train mode only, passes over the scene list per epoch.

Modes: "train" uses ``train_transforms``; "val" uses ``test_transforms`` with train-style
voxelization (one voxel per row, labels kept, no fragments) and a seed that ignores the epoch,
so validation is repeatable; "test" uses ``test_transforms`` with test-mode voxelization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from pointseg.data.scene import load_scene
from pointseg.data.transforms import (
    Compose,
    to_container,
    build_transforms,
    default_test_transforms,
    default_train_transforms,
)

MODES = ("train", "val", "test")
FEATURES = ("color", "normal", "coord")


class ScanNet200Dataset(Dataset):
    """Scenes of ``root/<split>/*/`` (sorted by name), loaded and transformed per item.

    Item ``i`` is scene ``i % num_scenes`` transformed with ``np.random.default_rng((seed,
    epoch, i))`` (epoch fixed to 0 outside train mode): the sample depends only on the seed, the
    epoch and the index, never on which worker or process loads it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transforms: Compose | Sequence[Mapping[str, Any]],
        mode: str,
        seed: int = 0,
        loop: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"ScanNet200Dataset: mode must be one of {MODES}, got {mode!r}")
        if loop < 1:
            raise ValueError(f"ScanNet200Dataset: loop must be >= 1, got {loop}")
        self.root = Path(root)
        self.split = split
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir}: split folder not found")
        self.scenes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.scenes:
            raise FileNotFoundError(f"{split_dir}: no scene folders")
        self.transforms = transforms if isinstance(transforms, Compose) else build_transforms(transforms)
        self.mode = mode
        self.seed = int(seed)
        self.loop = int(loop)
        self.epoch = 0

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.scenes]

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentations of this epoch (train mode); call before iterating."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.scenes) * self.loop

    def rng(self, index: int) -> np.random.Generator:
        epoch = self.epoch if self.mode == "train" else 0
        return np.random.default_rng((self.seed, epoch, index))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        data = load_scene(self.scenes[index % len(self.scenes)])
        return self.transforms(data, self.rng(index))


def _fill_pipeline(items: list[dict], mode: str, voxel_size: float, features: list[str]) -> list[dict]:
    """Copy of ``items`` with the config's voxel size / features filled in and the voxel mode set."""
    out = []
    for item in items:
        item = dict(item)
        name = item.get("name")
        if name == "Voxelize":
            if float(item.setdefault("voxel_size", voxel_size)) != float(voxel_size):
                raise ValueError(
                    f"data: Voxelize voxel_size {item['voxel_size']} differs from data.voxel_size {voxel_size}"
                )
            if mode == "test":
                item["mode"] = "test"
            else:
                item["mode"] = "train"
                item.pop("fragments", None)
        elif name == "ToFeature":
            if list(item.setdefault("keys", features)) != list(features):
                raise ValueError(f"data: ToFeature keys {item['keys']} differ from data.features {features}")
        out.append(item)
    return out


def build_dataset(data_cfg: Mapping[str, Any] | Any, split: str, mode: str) -> ScanNet200Dataset:
    """Dataset of ``data_cfg.root/<split>`` in ``mode`` (train / val / test); see module doc."""
    cfg = to_container(data_cfg)
    if mode not in MODES:
        raise ValueError(f"build_dataset: mode must be one of {MODES}, got {mode!r}")
    if not cfg or cfg.get("root") is None:
        raise ValueError("data.root: the preprocessed data folder must be set")
    voxel_size = float(cfg.get("voxel_size") or 0.02)
    features = list(cfg.get("features") or ["color"])
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"data.features: unknown {unknown}; choose from {list(FEATURES)}")
    if mode == "train":
        items = cfg.get("train_transforms") or default_train_transforms(voxel_size, features)
    else:
        items = cfg.get("test_transforms") or default_test_transforms(voxel_size, features)
    items = _fill_pipeline(list(items), mode, voxel_size, features)
    return ScanNet200Dataset(
        cfg["root"],
        split,
        build_transforms(items),
        mode,
        seed=int(cfg.get("seed") or 0),
        loop=int(cfg.get("loop") or 1) if mode == "train" else 1,
    )
