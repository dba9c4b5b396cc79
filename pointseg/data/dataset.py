"""The dataset over ``DATA/<split>/<scene>/``, its config section, and ``build_dataset``.

Which labels a scene carries is ``data.dataset`` (a ``pointseg.datasets.DATASETS`` name, default
ScanNet200) restricted to ``data.classes`` when set (remapped to 0..K−1 on load).

Modes: "train" uses ``train_transforms``; "val" uses ``test_transforms`` with train-style
voxelization (one voxel per row, labels kept, no fragments) and a seed that ignores the epoch,
so validation is repeatable; "test" uses ``test_transforms`` with test-mode voxelization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from pointseg.data.sampler import SAMPLERS
from pointseg.data.scene import load_scene
from pointseg.data.transforms import (
    Compose,
    build_transforms,
    check_transforms,
    default_test_transforms,
    default_train_transforms,
    to_container,
)
from pointseg.datasets import DATASETS, DEFAULT_DATASET, DatasetSpec, check_num_classes, default_spec, spec_of
from pointseg.utils.schema import REQUIRED, non_negative, param, positive, typed, validate_section

MODES = ("train", "val", "test")
# [LG] the network sees colour only.
DEFAULT_FEATURES = ["color"]

# Per-point input features ToFeature can concatenate, and their channels.
FEATURES = {"color": 3, "normal": 3, "coord": 3}


def _features(v: Any) -> str | None:
    unknown = [f for f in v if f not in FEATURES]
    if unknown or not v:
        return f"must be a non-empty list of {list(FEATURES)}"
    return None


def _transforms(v: Any) -> str | None:
    return None if v is None else check_transforms(v)


def _dataset(v: Any) -> str | None:
    return None if v in DATASETS else f"must be one of {sorted(DATASETS)}"


def _classes(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) or not all(isinstance(c, str) for c in v) or not v:
        return "must be null or a non-empty list of class names of data.dataset"
    return None


def _sampler(v: Any) -> str | None:
    return None if v in SAMPLERS else f"must be one of {list(SAMPLERS)}"


@dataclass
class DataConfig:
    """The ``data`` section: where the scenes are and how they become batches."""

    root: str = param(REQUIRED, "the preprocessed folder (tools/preprocess_scannet200.py --out)")
    dataset: str = param(DEFAULT_DATASET, "[ours] label space: scannet200 | scannet20 (pointseg.datasets.DATASETS; docs/design.md, Adding a dataset); model.num_classes follows it", _dataset)
    classes: Optional[list] = param(None, "[ours] null: every class of data.dataset; a list of its class names: only those, as classes 0..K-1 in list order (the others ignored); model.num_classes follows (K)", _classes)
    seed: Optional[int] = param(None, "[ours] base of the per-sample augmentation seeds; null: the run's seed")
    voxel_size: float = param(0.02, "[LG] voxel edge in metres (Scannet200Voxelization2cmDataset)", positive)
    features: list = param(DEFAULT_FEATURES, "[LG] per-point inputs, any of color / normal / coord (3 channels each)", _features)
    batch_size: int = param(8, "[ours] scenes per step and process; [LG] 16 per process on 2 GPUs", positive)
    val_batch_size: int = param(1, "[LG] scenes per validation batch", positive)
    max_points: Optional[int] = param(1_800_000, "[LG] train_limit_numpoints: a scene that would push a batch beyond it is dropped and logged", positive)
    num_workers: int = param(4, "[LG] data-loading processes (0: load in the training process)", non_negative)
    drop_last: bool = param(True, "[ours] drop an epoch's last, incomplete batch: every step sees a full batch")
    loop: int = param(1, "[ours] passes over the scene list per training epoch; 1: an epoch is the scene list once", positive)
    sampler: str = param("uniform", "[ours] uniform: every scene once per epoch; repeat_factor: class-aware repeat-factor sampling (Gupta et al., LVIS, CVPR 2019) over scenes", _sampler)
    repeat_threshold: float = param(0.5, "[ours] RFS threshold t: a class in a share f < t of the train scenes repeats its scenes sqrt(t / f) times per epoch ([LVIS] 0.001 over 1,203 classes; 0.5 repeats the long-tail benchmark's rarest class ~3.3x)", positive)
    train_transforms: Optional[list] = param(None, "[LG] list of {name, ...}; null: the baseline's augmentations (transforms.default_train_transforms); PasteTailInstances first: [LG] tail-instance pasting; see Transforms below", _transforms)
    test_transforms: Optional[list] = param(None, "[LG] list of {name, ...}; null: the baseline's test-time steps (transforms.default_test_transforms)", _transforms)


class ScanNet200Dataset(Dataset):
    """Scenes of ``root/<split>/*/`` (sorted by name), loaded and transformed per item; labels
    are those of ``spec`` (default ScanNet200, whence the name).

    Item ``i`` is scene ``i % num_scenes`` transformed with ``np.random.default_rng((seed,
    epoch, i))`` (epoch fixed to 0 outside train mode): the sample depends only on the seed, the
    epoch and the index, never on which worker or process loads it. Items past ``len`` are further
    visits of the same scenes with augmentations of their own (repeat-factor sampling).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transforms: Compose | Sequence[Mapping[str, Any]],
        mode: str,
        seed: int = 0,
        loop: int = 1,
        spec: DatasetSpec | None = None,
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
        self.spec = default_spec() if spec is None else spec

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
        if index < 0:
            raise IndexError(f"index {index} out of range: items are numbered from 0")
        data = load_scene(self.scenes[index % len(self.scenes)], self.spec)
        return self.transforms(data, self.rng(index))


def _fill_pipeline(
    items: list[dict],
    mode: str,
    voxel_size: float,
    features: list[str],
    fragments: bool,
    root: str,
    split: str,
    spec: DatasetSpec | None = None,
) -> list[dict]:
    """Copy of ``items`` with the config's voxel size / features filled in, the voxel mode (and,
    in test mode, the fragment output) set, and instance pasting given the data folder and split
    its bank is cut from."""
    out = []
    for item in items:
        item = dict(item)
        name = item.get("name")
        if name == "PasteTailInstances":
            if mode != "train":
                raise ValueError("data: PasteTailInstances is a training augmentation; it belongs in train_transforms only")
            if spec is not None and spec is not default_spec():
                # the bank holds ScanNet200 class indices cut from segment200.npy
                raise ValueError(f"data: PasteTailInstances pastes ScanNet200 instances; it cannot train dataset {spec.name!r}")
            item.setdefault("root", str(root))
            item.setdefault("split", split)
        elif name == "Voxelize":
            if float(item.setdefault("voxel_size", voxel_size)) != float(voxel_size):
                raise ValueError(
                    f"data: Voxelize voxel_size {item['voxel_size']} differs from data.voxel_size {voxel_size}"
                )
            if "fragments" in item:
                raise ValueError(
                    "data: Voxelize fragments are chosen when the test dataset is built "
                    "(build_dataset(..., fragments=True); pointseg-test --no-fragments), not in the config"
                )
            item["mode"] = "test" if mode == "test" else "train"
            item["fragments"] = fragments
        elif name == "ToFeature":
            if list(item.setdefault("keys", features)) != list(features):
                raise ValueError(f"data: ToFeature keys {item['keys']} differ from data.features {features}")
        out.append(item)
    return out


def in_channels(features: Sequence[str]) -> int:
    """Input channels of the network for ``data.features`` (``model.in_channels`` is derived here)."""
    return sum(FEATURES[f] for f in features)


def pipeline(
    data_cfg: Mapping[str, Any] | Any, mode: str, fragments: bool = False, root: str | None = None, split: str = "train"
) -> Compose:
    """The transforms of ``mode`` that a ``data`` section describes: the dataset's (``root`` and
    ``split``: where instance pasting cuts its bank), and ``pointseg-predict``'s for scans outside
    any dataset folder."""
    cfg = typed(DataConfig, data_cfg, "data")
    validate_section(DataConfig, cfg, "data")
    voxel_size, features = float(cfg.voxel_size), list(cfg.features)
    if mode == "train":
        items = cfg.train_transforms if cfg.train_transforms is not None else default_train_transforms(voxel_size, features)
    else:
        items = cfg.test_transforms if cfg.test_transforms is not None else default_test_transforms(voxel_size, features)
    items = _fill_pipeline(list(to_container(items)), mode, voxel_size, features, fragments, root, split, spec_of(cfg))
    return build_transforms(items)


def build_dataset(
    data_cfg: Mapping[str, Any] | Any, split: str, mode: str, fragments: bool = False, num_classes: int | None = None
) -> ScanNet200Dataset:
    """Dataset of ``data_cfg.root/<split>`` in ``mode`` (train / val / test); ``data_cfg`` is a
    ``data`` section, complete or partial (missing keys take the ``DataConfig`` defaults).

    ``fragments`` (test mode only) makes every sample carry all of its voxel fragments, so that
    each point can be predicted from its own voxel representative (``evaluation.inference``).
    ``num_classes`` (``model.num_classes``), when given, must be the dataset's class count.
    """
    if mode not in MODES:
        raise ValueError(f"build_dataset: mode must be one of {MODES}, got {mode!r}")
    if fragments and mode != "test":
        raise ValueError(f"build_dataset: fragments are a test-mode output, not {mode!r}")
    cfg = typed(DataConfig, data_cfg, "data")
    spec = spec_of(cfg)
    if num_classes is not None:
        check_num_classes(spec, num_classes)
    if OmegaConf.is_missing(cfg, "root") or cfg.root is None:
        raise ValueError("data.root: the preprocessed data folder must be set")
    return ScanNet200Dataset(
        cfg.root,
        split,
        pipeline(cfg, mode, fragments, cfg.root, split),
        mode,
        seed=0 if cfg.seed is None else int(cfg.seed),
        loop=int(cfg.loop) if mode == "train" else 1,
        spec=spec,
    )
