"""Evaluate a split: predict every vertex of every scene, score, write predictions and the submission.

Three steps behind ``tools/test.py``: :func:`predict_split`, then :func:`score_split` (labelled
splits) or :func:`submit_split` (the test split). Scenes are sharded over torchrun processes; each process
accumulates its confusion matrix and writes its own ``<scene>.txt`` files; rank 0 sums, reports
and zips. A scene that fails is recorded with its error and the run ends non-zero: a metric over
silently fewer scenes would not be the benchmark's number. The output folder is checked for
writability before the first scene is predicted; the summary files are written only when a
labelled point was scored, all three or none (an evaluation that scored nothing leaves the files
of an earlier one as they were).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pointseg.data.scene import SEGMENT_FILE, load_scene, num_points
from pointseg.datasets import DatasetSpec, default_spec
from pointseg.evaluation.inference import Model, TTAView, predict_scene
from pointseg.evaluation.metrics import SemSegMetric
from pointseg.evaluation.report import (
    plot_per_class_iou,
    save_confusion,
    write_metrics_json,
)
from pointseg.evaluation.submission import (
    check_raw_release,
    raw_vertex_counts,
    validate_submission,
    write_prediction_txt,
    write_submission_from_txt,
)
from pointseg.preprocessing.raw import raw_scene_list
from pointseg.utils.comm import all_gather_object, barrier
from pointseg.utils.errors import one_line
from pointseg.utils.io import atomic_path, check_writable_folder

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
SUMMARY_FILES = ("metrics.json", "confusion.npz", "per_class_iou.png")
STAGING_DIR = ".predictions_staging"  # test-split txt files kept only for the zip


@dataclass
class SplitResult:
    """What one evaluation produced; ``failed`` maps scene → error message."""

    metrics: dict[str, Any] | None = None
    scenes: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    submission: Path | None = None
    submission_problems: list[str] = field(default_factory=list)
    # A labelled split of which no point was scored: nothing was written.
    nothing_scored: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.submission_problems and not self.nothing_scored


def dataset_spec(dataset: Any) -> DatasetSpec:
    """The label space of ``dataset`` (its ``spec``; ScanNet200 for a dataset without one)."""
    return getattr(dataset, "spec", None) or default_spec()


def preprocessed_vertex_counts(scene_dirs: Sequence[Path]) -> dict[str, int]:
    """``{scene: N}`` from each scene folder's ``coord.npy`` header."""
    return {d.name: num_points(d) for d in scene_dirs}


@dataclass
class ScenePrediction:
    """One scene's result: class index per vertex, its ground truth (None if unlabelled), or an error."""

    name: str
    pred: np.ndarray | None = None
    segment: np.ndarray | None = None
    error: str | None = None


def predict_split(
    models: Sequence[Model],
    dataset: Any,
    views: Sequence[TTAView] = (TTAView(),),
    num_classes: int = 200,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    label_map: np.ndarray | None = None,
) -> Iterator[ScenePrediction]:
    """Predict this process's share of the scenes of ``dataset`` (a test-mode ``ScanNet200Dataset``,
    with or without fragments). A scene that fails yields its error; the others go on.
    ``label_map`` (model class → class of the dataset) maps the predictions of a model of another
    label set."""
    spec = dataset_spec(dataset)
    mine = list(range(rank, len(dataset.scenes), world_size))
    bar = tqdm(mine, desc=f"{dataset.split} scenes", unit="scene", disable=not progress or rank != 0)
    for i in bar:
        folder = dataset.scenes[i]
        bar.set_postfix_str(folder.name)
        try:
            data = load_scene(folder, spec)
            prob = predict_scene(models, data, dataset.transforms, views, num_classes, device, dataset.rng(i))
            pred = prob.argmax(dim=1).cpu().numpy()
            yield ScenePrediction(folder.name, pred if label_map is None else label_map[pred], data.get("segment"))
        except Exception as e:  # reported per scene at the end; the other scenes still run
            yield ScenePrediction(folder.name, error=f"{type(e).__name__}: {one_line(e)}")
    bar.close()


def score_split(
    metric: SemSegMetric, result: SplitResult, out_dir: Path, split: str, views: Sequence[TTAView], ensemble_size: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The benchmark summary of the accumulated confusion: ``metrics.json``, ``confusion.npz``,
    ``per_class_iou.png`` in ``out_dir``; ``extra`` entries (e.g. the post-hoc corrections used)
    are recorded in ``metrics.json`` too. None, and nothing written, when no labelled point was
    scored (``result.nothing_scored``)."""
    for s in result.unlabelled:
        label_file = metric.spec.label_file if metric.spec is not None else SEGMENT_FILE
        result.failed.setdefault(s, f"no {label_file}: a labelled split needs ground truth")
    metrics = metric.evaluate()
    metrics["split"] = split
    metrics["scenes"] = len(result.scenes) - len(result.failed)
    metrics["failed_scenes"] = sorted(result.failed)
    metrics["tta_views"] = [{"angle": v.angle, "scale": v.scale} for v in views]
    metrics["ensemble_size"] = ensemble_size
    metrics.update(extra or {})
    if not metrics.get("num_points"):
        result.nothing_scored = True
        return None
    write_summary(out_dir, metrics, metric.confusion)
    return metrics


def write_summary(out_dir: Path, metrics: dict[str, Any], confusion: np.ndarray) -> None:
    """:data:`SUMMARY_FILES`, together: each is written to its temporary first, and they are
    renamed into place only when all three are complete, so a failure (a full disk, a plot that
    cannot be drawn) leaves the folder's earlier files, not a mixture of two evaluations."""
    writers = {
        "metrics.json": lambda path: write_metrics_json(path, metrics),
        "confusion.npz": lambda path: save_confusion(path, confusion),
        "per_class_iou.png": lambda path: plot_per_class_iou(metrics, path),
    }
    with contextlib.ExitStack() as stack:
        for name in SUMMARY_FILES:
            tmp = stack.enter_context(atomic_path(out_dir / name))
            try:
                writers[name](tmp)
            except OSError as e:  # named as the file it was for, not its temporary
                raise OSError(e.errno, e.strerror, str(out_dir / name)) from e


def submit_split(
    result: SplitResult, txt_dir: Path, out_dir: Path, dataset: Any, raw: str | Path | None
) -> tuple[Path, list[str]]:
    """``submission.zip`` of the scenes' ``<scene>.txt`` files, and its problems: checked against
    the raw meshes' vertex counts when ``raw`` is given, else against the preprocessed scenes."""
    split = dataset.split
    txts = [txt_dir / f"{s}.txt" for s in result.scenes if s not in result.failed]
    submission = write_submission_from_txt(out_dir / "submission.zip", txts)
    if raw is not None:
        expected, problems = raw_vertex_counts(raw, split)
    else:
        expected, problems = preprocessed_vertex_counts(dataset.scenes), []
        missing = sorted(set(raw_scene_list(None, split)) - set(expected))
        if missing:
            log.warning(
                "%d official %s scenes are not in %s (e.g. %s); the benchmark server needs all of them",
                len(missing), split, Path(dataset.root) / split, missing[0],
            )
    return submission, problems + validate_submission(submission, expected, dataset_spec(dataset))


def evaluate_split(
    models: Sequence[Model],
    dataset: Any,
    out_dir: str | Path,
    views: Sequence[TTAView] = (TTAView(),),
    num_classes: int = 200,
    save_predictions: bool = False,
    raw: str | Path | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    label_map: np.ndarray | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> SplitResult:
    """Predict, then score (labelled splits) or submit (the test split): the three steps above.

    Labelled splits get ``metrics.json``, ``confusion.npz`` and ``per_class_iou.png``; the test
    split gets ``submission.zip``, validated. Processes share the scenes; rank 0 sums and writes.
    With ``label_map`` the models predict ``num_classes`` classes mapped into the dataset's, which
    are scored. Class names, groups and submission ids are the dataset's (``dataset.spec``).
    ``extra_metrics`` are recorded in ``metrics.json``.
    """
    out_dir = Path(out_dir)
    check_writable_folder(out_dir)  # before the first scene, not after the last
    is_test = dataset.split == dataset_spec(dataset).test_split
    if is_test and raw is not None:
        check_raw_release(raw, dataset.split)  # before predicting every scene, not after
    txt_dir = out_dir / (PREDICTIONS_DIR if save_predictions or not is_test else STAGING_DIR)
    write_txt = save_predictions or is_test
    spec = dataset_spec(dataset)
    k = num_classes if label_map is None else spec.num_classes
    metric = SemSegMetric(k, spec if spec.num_classes == k else None)
    result = SplitResult(scenes=list(dataset.names))
    failed: dict[str, str] = {}
    unlabelled: list[str] = []
    for p in predict_split(models, dataset, views, num_classes, device, rank, world_size, progress, label_map):
        if p.error is not None:
            failed[p.name] = p.error
            continue
        if p.segment is not None:
            metric.process(p.pred, p.segment)
        else:
            unlabelled.append(p.name)
        if write_txt:
            write_prediction_txt(txt_dir / f"{p.name}.txt", p.pred, spec)
    metric.all_reduce()
    for part in all_gather_object((failed, unlabelled)):
        result.failed.update(part[0])
        result.unlabelled += part[1]
    barrier()
    if rank != 0:
        return result
    if not is_test:
        result.metrics = score_split(metric, result, out_dir, dataset.split, views, len(models), extra_metrics)
    else:
        result.submission, result.submission_problems = submit_split(result, txt_dir, out_dir, dataset, raw)
        if not save_predictions:
            shutil.rmtree(txt_dir, ignore_errors=True)
    return result
