"""A checkpoint must predict the label set the data holds (the dataset's: ScanNet200 unless
``data.dataset`` / ``data.classes`` say otherwise), or say how to map it.

Scoring a 20-class model against ScanNet200 labels would count only the points of classes whose
indices it happens to share, a partial mIoU that looks like a result. Such a checkpoint is refused
unless a label map, a JSON object ``{"<model class index>": <ScanNet200 class index>, ...}``
covering every class of the model, maps its predictions into ScanNet200 explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pointseg.datasets import DatasetSpec, default_spec


def read_label_map(path: str | os.PathLike, spec: DatasetSpec | None = None) -> np.ndarray:
    """Lookup table (K,) int64, model class index → class index of ``spec`` (default ScanNet200),
    from a label map whose keys are exactly 0..K-1 (every class of the model mapped)."""
    spec = default_spec() if spec is None else spec
    num_classes = spec.num_classes
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the label map ({e})") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f'{path}: a label map is a JSON object {{"<model class index>": <ScanNet200 class index>, ...}}')
    table = np.full(len(data), -1, dtype=np.int64)
    for key, target in data.items():
        if not (key.isdigit() and str(int(key)) == key):
            raise ValueError(f"{path}: key {key!r} is not a model class index")
        if int(key) >= len(data):
            missing = sorted(set(range(len(data))) - {int(k) for k in data if k.isdigit()})
            raise ValueError(f"{path}: model class {missing[0]} is not mapped (the keys must be 0..K-1, every class of the model)")
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
            raise ValueError(f"{path}: class {key} maps to {target!r}, not a {spec.display_name} class index 0..{num_classes - 1}")
        table[int(key)] = target
    return table


def check_label_set(
    checkpoint: str | os.PathLike, num_classes: int, label_map: np.ndarray | None, spec: DatasetSpec | None = None
) -> None:
    """Refuse a checkpoint whose classes are not the dataset's (``spec``, default ScanNet200)
    unless ``label_map`` maps all of them."""
    spec = default_spec() if spec is None else spec
    if label_map is None:
        if num_classes != spec.num_classes:
            raise ValueError(
                f"{checkpoint}: the checkpoint predicts {num_classes} classes, the data holds {spec.display_name} labels "
                f"({spec.num_classes} classes); map its classes with --label-map FILE.json "
                f'({{"<model class index>": <{spec.display_name} class index>, ...}})'
            )
    elif len(label_map) != num_classes:
        raise ValueError(
            f"{checkpoint}: the checkpoint predicts {num_classes} classes, the label map maps {len(label_map)}"
        )
