"""Datasets as data: the name → :class:`DatasetSpec` table that ``data.dataset`` chooses from.

Adding a dataset takes a module here that builds its spec, its class table under ``datasets/``,
and a config (docs/design.md, "Adding a dataset"). ``data.classes`` restricts a dataset to a
list of its classes (:func:`subset`), remapped to 0..K−1 when a scene is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pointseg.datasets import scannet20, scannet200
from pointseg.datasets.base import DatasetSpec, check_num_classes, subset

DEFAULT_DATASET = "scannet200"

DATASETS: dict[str, DatasetSpec] = {
    "scannet200": scannet200.build(),
    "scannet20": scannet20.build(),
}


def get_dataset(name: str = DEFAULT_DATASET, classes: Sequence[str] | None = None) -> DatasetSpec:
    """The spec of ``name``, restricted to ``classes`` (names of its classes) when given."""
    if name not in DATASETS:
        raise ValueError(f"data.dataset: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    return spec if classes is None else subset(spec, list(classes))


def spec_of(data_cfg: Mapping[str, Any] | Any) -> DatasetSpec:
    """The spec a ``data`` section describes (``data.dataset``, ``data.classes``); a missing key
    takes its default, so configs and checkpoints written before these keys read as ScanNet200."""
    get = data_cfg.get if hasattr(data_cfg, "get") else lambda k, d=None: getattr(data_cfg, k, d)
    classes = get("classes", None)
    return get_dataset(str(get("dataset", DEFAULT_DATASET) or DEFAULT_DATASET), None if classes is None else list(classes))


def default_spec() -> DatasetSpec:
    """ScanNet200: what code and files written before ``data.dataset`` existed mean."""
    return DATASETS[DEFAULT_DATASET]


__all__ = ["DATASETS", "DEFAULT_DATASET", "DatasetSpec", "check_num_classes", "default_spec", "get_dataset", "spec_of", "subset"]
