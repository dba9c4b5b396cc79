"""Benchmark metrics, vertex prediction (fragments, TTA, ensembles) and submission files.

``inference`` is imported on demand (it pulls in the data and model packages); so are the
metrics (PEP 562), which need torch, so that checking a submission (``submission``) does not.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SemSegMetric", "per_class_scores", "summarize"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pointseg.evaluation import metrics

    return getattr(metrics, name)
