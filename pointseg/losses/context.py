"""The run facts a builder may need beyond its own config section: the number of classes, the
width of the features, the training split's class counts (read lazily, once) and the data root.

A loss, an auxiliary loss or a head is built from ``(its typed section, BuildContext)``; the one
context of a model comes from ``pointseg.models.segmentor.build_context``. A loss that needs the
class prior asks ``ctx.class_counts(...)`` (and ``pointseg.data.stats.class_prior`` turns the
counts into the prior), so no loss needs a path of its own to the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pointseg.data.stats import ClassCounts, train_class_counts
from pointseg.datasets import DatasetSpec


@dataclass(frozen=True)
class BuildContext:
    """Facts of the run every builder may read; frozen, shared by all the builders of one model."""

    num_classes: int
    feature_dim: int | None = None  # the backbone's output width, once the backbone is built
    data_root: Path | None = None
    spec: DatasetSpec | None = None  # the label space the counts are read in (None: ScanNet200)
    # Counts from elsewhere than ``data_root/stats.json`` (tests, tools): (needed_by) -> counts.
    counts: Callable[[str], ClassCounts] | None = None
    # The counts once read, shared by the copies ``with_feature_dim`` makes.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def class_counts(self, needed_by: str) -> ClassCounts:
        """The training split's per-class counts, read on the first call only; ``needed_by`` (a
        config key) is named in the error when there are none."""
        if "counts" not in self.cache:
            if self.counts is not None:
                self.cache["counts"] = self.counts(needed_by)
            else:
                self.cache["counts"] = train_class_counts(self.data_root, self.num_classes, needed_by, self.spec)
        return self.cache["counts"]

    def with_feature_dim(self, feature_dim: int) -> "BuildContext":
        """This context once the backbone says how wide its features are."""
        return dataclasses.replace(self, feature_dim=int(feature_dim))

    def require_feature_dim(self, who: str) -> int:
        if self.feature_dim is None:
            raise ValueError(f"{who}: the build context has no feature_dim (build the backbone first)")
        return int(self.feature_dim)


__all__ = ["BuildContext"]
