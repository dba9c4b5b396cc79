"""Benchmark metrics, vertex prediction (fragments, TTA, ensembles) and submission files.

``inference`` is imported on demand (it pulls in the data and model packages).
"""

from pointseg.evaluation.metrics import SemSegMetric, per_class_scores, summarize

__all__ = ["SemSegMetric", "per_class_scores", "summarize"]
