"""A checkpoint must predict the label set the data holds (ScanNet200), or say how to map it.

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

from pointseg.meta import NUM_CLASSES


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Lookup table (K,) int64, model class index → ScanNet200 class index, from a label map whose
    keys are exactly 0..K-1 (every class of the model mapped)."""
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
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < NUM_CLASSES:
            raise ValueError(f"{path}: class {key} maps to {target!r}, not a ScanNet200 class index 0..{NUM_CLASSES - 1}")
        table[int(key)] = target
    return table


def check_label_set(checkpoint: str | os.PathLike, num_classes: int, label_map: np.ndarray | None) -> None:
    """Refuse a checkpoint whose classes are not ScanNet200's unless ``label_map`` maps all of them."""
    if label_map is None:
        if num_classes != NUM_CLASSES:
            raise ValueError(
                f"{checkpoint}: the checkpoint predicts {num_classes} classes, the data holds ScanNet200 labels "
                f"({NUM_CLASSES} classes); map its classes with --label-map FILE.json "
                '({"<model class index>": <ScanNet200 class index>, ...})'
            )
    elif len(label_map) != num_classes:
        raise ValueError(
            f"{checkpoint}: the checkpoint predicts {num_classes} classes, the label map maps {len(label_map)}"
        )
