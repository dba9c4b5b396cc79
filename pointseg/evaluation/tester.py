"""Evaluate a split: predict every vertex of every scene, score, write predictions and the submission.

The loop behind ``tools/test.py``. Scenes are sharded over torchrun processes; each process
accumulates its confusion matrix and writes its own ``<scene>.txt`` files; rank 0 sums, reports
and zips. A scene that fails is recorded with its error and the run ends non-zero: a metric over
silently fewer scenes would not be the benchmark's number.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pointseg.data.scene import SEGMENT_FILE, load_scene, num_points
from pointseg.evaluation.inference import Model, TTAView, predict_scene, set_fragments
from pointseg.evaluation.metrics import SemSegMetric
from pointseg.evaluation.report import (
    format_table,
    plot_per_class_iou,
    save_confusion,
    write_metrics_json,
)
from pointseg.evaluation.submission import (
    raw_vertex_counts,
    validate_submission,
    write_prediction_txt,
    write_submission_from_txt,
)
from pointseg.preprocessing.raw import raw_scene_list
from pointseg.utils.comm import all_gather_object, barrier

PREDICTIONS_DIR = "predictions"
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

    @property
    def ok(self) -> bool:
        return not self.failed and not self.submission_problems


def preprocessed_vertex_counts(scene_dirs: Sequence[Path]) -> dict[str, int]:
    """``{scene: N}`` from each scene folder's ``coord.npy`` header."""
    return {d.name: num_points(d) for d in scene_dirs}


def evaluate_split(
    models: Sequence[Model],
    dataset: Any,
    out_dir: str | Path,
    views: Sequence[TTAView] = (TTAView(),),
    num_classes: int = 200,
    use_fragments: bool = True,
    save_predictions: bool = False,
    raw: str | Path | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> SplitResult:
    """Predict and score ``dataset`` (a ``ScanNet200Dataset`` in test mode) into ``out_dir``.

    Labelled splits get ``metrics.json``, ``confusion.npz``, ``per_class_iou.png`` and a console
    table; the test split gets ``submission.zip``, validated against ``raw`` (PLY headers) when
    given, else against the preprocessed vertex counts.
    """
    out_dir = Path(out_dir)
    split = dataset.split
    set_fragments(dataset.transforms, use_fragments)
    is_test = split == "test"
    txt_dir = out_dir / (PREDICTIONS_DIR if save_predictions or not is_test else STAGING_DIR)
    write_txt = save_predictions or is_test
    metric = SemSegMetric(num_classes)
    result = SplitResult(scenes=list(dataset.names))
    mine = list(range(rank, len(dataset.scenes), world_size))
    failed: dict[str, str] = {}
    unlabelled: list[str] = []
    bar = tqdm(mine, desc=f"{split} scenes", unit="scene", disable=not progress or rank != 0)
    for i in bar:
        folder = dataset.scenes[i]
        bar.set_postfix_str(folder.name)
        try:
            data = load_scene(folder)
            prob = predict_scene(
                models, data, dataset.transforms, views, num_classes, use_fragments, device, dataset.rng(i)
            )
            pred = prob.argmax(dim=1).cpu().numpy()
            del prob
            if "segment" in data:
                metric.process(pred, data["segment"])
            else:
                unlabelled.append(folder.name)
            if write_txt:
                write_prediction_txt(txt_dir / f"{folder.name}.txt", pred)
        except Exception as e:  # reported per scene at the end; the other scenes still run
            failed[folder.name] = f"{type(e).__name__}: {e}"
    bar.close()
    metric.all_reduce()
    for part in all_gather_object((failed, unlabelled)):
        result.failed.update(part[0])
        result.unlabelled += part[1]
    barrier()
    if rank != 0:
        return result

    if not is_test:
        if result.unlabelled:
            for s in result.unlabelled:
                result.failed.setdefault(s, f"no {SEGMENT_FILE}: a labelled split needs ground truth")
        metrics = metric.evaluate()
        metrics["split"] = split
        metrics["scenes"] = len(result.scenes) - len(result.failed)
        metrics["failed_scenes"] = sorted(result.failed)
        metrics["tta_views"] = [{"angle": v.angle, "scale": v.scale} for v in views]
        metrics["ensemble_size"] = len(models)
        write_metrics_json(out_dir / "metrics.json", metrics)
        save_confusion(out_dir / "confusion.npz", metric.confusion)
        plot_per_class_iou(metrics, out_dir / "per_class_iou.png")
        print(format_table(metrics))
        result.metrics = metrics
    else:
        txts = [txt_dir / f"{s}.txt" for s in result.scenes if s not in result.failed]
        result.submission = write_submission_from_txt(out_dir / "submission.zip", txts)
        if raw is not None:
            expected, problems = raw_vertex_counts(raw, split)
        else:
            expected, problems = preprocessed_vertex_counts(dataset.scenes), []
            missing = sorted(set(raw_scene_list(None, split)) - set(expected))
            if missing:
                print(
                    f"note: {len(missing)} official {split} scenes are not in {Path(dataset.root) / split} "
                    f"(e.g. {missing[0]}); the benchmark server needs all of them"
                )
        result.submission_problems = problems + validate_submission(result.submission, expected)
        if not save_predictions:
            shutil.rmtree(txt_dir, ignore_errors=True)
    return result
