"""Raw ScanNet v2 release → scene folders (Pointcept layout) labelled for ScanNet200 and / or
ScanNet v2's 20 classes, and each dataset's class statistics.

``RAW/scans/<scene>/`` holds the train and val scans, ``RAW/scans_test/<scene>/`` the test scans.
The split of a scene comes from ``RAW/scannetv2_{train,val,test}.txt`` when present (so a partial
or custom release can bring its own lists), else from the official lists in ``datasets/``.
A listed scene whose folder is missing counts as failed ("missing folder"); a split whose whole
root (``scans/`` or ``scans_test/``) is absent is skipped and named in the summary, because the
test scans are often not downloaded.

Output per scene, written atomically (the folder appears complete or not at all):
``DATA/<split>/<scene>/coord.npy`` float32 (N,3), ``color.npy`` uint8 (N,3), ``normal.npy``
float32 (N,3) unit, and for train/val the label file of each dataset asked for (``datasets``:
``segment200.npy`` for ScanNet200, the default, ``segment20.npy`` for ScanNet20; int16 (N,) class
index or −1) and ``instance.npy`` int32 (N,) segGroup id or −1. Vertex order is the mesh's. Asking
for both writes both in one pass, as Pointcept does; a scene folder redone for one dataset keeps
the labels of the others it held (relabelled from the same raw scan). Each dataset's per-class
counts go to its ``DatasetSpec.stats_file`` (``stats.json`` for ScanNet200).

One run at a time writes an output folder (a lock on ``DATA/.lock``); a run first removes the
temporary folders a killed run left in ``DATA/<split>/``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pointseg import meta
from pointseg.data.scene import is_finished, scene_dir, write_scene_dir
from pointseg.data.stats import read_dangling, write_stats
from pointseg.datasets import DATASETS, DEFAULT_DATASET, DatasetSpec
from pointseg.preprocessing.labels import dangling_segments, scannet_labels, unknown_categories
from pointseg.preprocessing.normals import normalize, vertex_normals
from pointseg.preprocessing.raw import (
    RAW_SCAN_FOLDER,
    RawScene,
    RawSceneError,
    raw_scene_dir,
    raw_scene_list,
    read_raw_scene,
)
from pointseg.utils.errors import one_line
from pointseg.utils.io import remove_temporaries
from pointseg.utils.lock import FolderLock

log = logging.getLogger(__name__)

LABELLED_SPLITS = ("train", "val")
INSTANCE_FILE = "instance.npy"
# A scene whose aggregation lists more than this share of segment ids that its segs.json lacks
# is reported: the two files almost surely come from different scans.
DANGLING_SHARE = 0.5
# Datasets whose labels preprocessing derives from the raw ScanNet annotations.
RAW_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.raw_labels is not None)


def raw_dataset_specs(names: tuple[str, ...] | list[str]) -> list[DatasetSpec]:
    """The specs of ``names``, each a dataset preprocessing can label (one-line error otherwise)."""
    bad = [n for n in names if n not in RAW_DATASETS]
    if bad or not names:
        raise ValueError(f"preprocessing: datasets {bad or '[]'} cannot be labelled from raw scans; choose from {list(RAW_DATASETS)}")
    return [DATASETS[n] for n in dict.fromkeys(names)]


@dataclass
class PreprocessSummary:
    """What one run did; ``failed`` maps scene → its one-line error."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Counted over the scenes processed in this run (skipped scenes are not read again).
    unknown_category_vertices: int = 0
    unknown_categories: list[str] = field(default_factory=list)
    missing_splits: list[str] = field(default_factory=list)
    stats_path: Path | None = None
    removed_temporaries: int = 0  # left by a killed run
    stats_error: str | None = None  # writing stats.json failed (one line)
    # Warnings, not failures: written scenes of which no vertex got a class, and scenes whose
    # aggregation mostly lists segment ids not in segs.json (scene → [dangling, aggregated]).
    without_labels: list[str] = field(default_factory=list)
    dangling: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and self.stats_error is None

    def report(self) -> str:
        """Human-readable summary, one fact per line."""
        lines = [
            f"scenes done: {len(self.done)}, skipped (already finished): {len(self.skipped)}, "
            f"failed: {len(self.failed)}",
            f"vertices with an unknown raw category (ignored): {self.unknown_category_vertices}",
        ]
        if self.unknown_categories:
            lines.append("unknown raw categories: " + ", ".join(repr(c) for c in self.unknown_categories))
        for split in self.missing_splits:
            lines.append(f"split {split!r} skipped: raw folder {RAW_SCAN_FOLDER[split]}/ is absent")
        if self.without_labels:
            lines.append(
                f"warning: {len(self.without_labels)} scene(s) have no labelled vertex (every vertex is unlabelled): "
                + ", ".join(self.without_labels)
            )
        for scene, (dangling, aggregated) in self.dangling.items():
            lines.append(
                f"warning: {scene}: {dangling} of the {aggregated} segment ids of its aggregation are not in its "
                "segs.json (the two files from different scans?); their vertices are unlabelled"
            )
        if self.stats_path is not None:
            lines.append(f"statistics: {self.stats_path}")
        lines.extend(f"FAILED {err}" for err in self.failed.values())
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# one scene


def convert_scene(
    raw: RawScene, align: bool = False, datasets: tuple[str, ...] = (DEFAULT_DATASET,)
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of one scene folder (the label file of each of ``datasets`` and the instances, only
    when ``raw`` has labels), in the mesh's vertex order, and the number of vertices ignored for
    an unknown raw category.

    ``align`` applies ``axisAlignment`` to homogeneous xyz as the official script does, and maps
    the normals by the inverse transpose of its linear part (a rotation for ScanNet).
    """
    normal = vertex_normals(raw.vertices, raw.faces)
    coord = raw.vertices.astype(np.float64)
    if align:
        m = raw.axis_alignment
        coord = coord @ m[:3, :3].T + m[:3, 3]
        normal = normalize(normal.astype(np.float64) @ np.linalg.inv(m[:3, :3]))
    out = {
        "coord.npy": coord.astype(np.float32),
        "color.npy": raw.colors.astype(np.uint8),
        "normal.npy": normal.astype(np.float32),
    }
    unknown = 0
    if raw.seg_indices is not None:
        specs = raw_dataset_specs(datasets)
        rules = {spec.label_file: spec.raw_labels for spec in specs}
        segments, instance, unknown = scannet_labels(raw.seg_indices, raw.seg_groups, rules)
        for name, segment in segments.items():
            out[name] = segment.astype(np.int16)
        out[INSTANCE_FILE] = instance.astype(np.int32)
    return out, unknown


@dataclass(frozen=True)
class SceneTask:
    scene: str
    src: Path
    dst: Path
    labelled: bool
    align: bool
    datasets: tuple[str, ...] = (DEFAULT_DATASET,)  # names: picklable for the worker processes


@dataclass
class SceneResult:
    scene: str
    error: str | None = None
    unknown_vertices: int = 0
    unknown_categories: tuple[str, ...] = ()
    labelled_vertices: int | None = None  # None for test scenes
    dangling: tuple[int, int] = (0, 0)  # segment ids of the aggregation: not in segs.json, all


def process_scene(task: SceneTask) -> SceneResult:
    """Read, label and write one scene; never raises (a failure comes back as its error line)."""
    try:
        raw = read_raw_scene(task.src, task.scene, labelled=task.labelled)
        # labels of other datasets the folder already holds are written again, not dropped
        held = tuple(n for n in RAW_DATASETS if (task.dst / DATASETS[n].label_file).is_file())
        datasets = tuple(dict.fromkeys(task.datasets + held))
        arrays, unknown = convert_scene(raw, align=task.align, datasets=datasets)
        names = tuple(unknown_categories(raw.seg_groups)) if task.labelled else ()
        write_scene_dir(task.dst, arrays)
        if not task.labelled:
            return SceneResult(task.scene, None, unknown, names)
        labelled = int((arrays[DATASETS[task.datasets[0]].label_file] >= 0).sum())
        return SceneResult(task.scene, None, unknown, names, labelled, dangling_segments(raw.seg_indices, raw.seg_groups))
    except RawSceneError as e:
        return SceneResult(task.scene, str(e))
    except Exception as e:  # noqa: BLE001 - one broken scan must not stop the other 1500
        problem = " ".join(f"{type(e).__name__}: {e}".split())
        return SceneResult(task.scene, f"{task.scene}: {task.dst}: unexpected error ({problem})")


# ---------------------------------------------------------------------------------------------
# the release


def preprocess_scannet200(
    raw: Path,
    out: Path,
    workers: int = 1,
    align: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    datasets: tuple[str, ...] | list[str] = (DEFAULT_DATASET,),
) -> PreprocessSummary:
    """Convert every listed scan of ``raw`` into ``out/<split>/<scene>/``, labelled for each of
    ``datasets`` (``RAW_DATASETS`` names), and write each dataset's statistics (``out/stats.json``
    for ScanNet200).

    Finished scene folders are skipped unless ``overwrite``; statistics always cover every
    finished scene of the lists, so they are complete after a rerun. ``workers > 1`` runs scenes
    in that many processes. Raises ``FileNotFoundError`` when ``raw`` has neither ``scans/`` nor
    ``scans_test/`` (almost surely a wrong path), ``OSError`` when ``out`` cannot be written or
    another run writes it; scene problems never raise, they are in ``summary.failed``, and a
    ``stats.json`` that cannot be written is ``summary.stats_error``.
    """
    raw, out = Path(raw), Path(out)
    datasets = tuple(spec.name for spec in raw_dataset_specs(tuple(datasets)))
    if not any((raw / d).is_dir() for d in set(RAW_SCAN_FOLDER.values())):
        raise FileNotFoundError(f"{raw}: no scans/ or scans_test/ folder: not a ScanNet v2 release")
    lists = {split: raw_scene_list(raw, split) for split in meta.SCENE_SPLITS}
    with FolderLock(out, what="preprocessing", noun="output folder"):
        return _preprocess(raw, out, lists, workers, align, overwrite, progress, datasets)


def _preprocess(
    raw: Path,
    out: Path,
    lists: dict[str, tuple[str, ...]],
    workers: int,
    align: bool,
    overwrite: bool,
    progress: bool,
    datasets: tuple[str, ...],
) -> PreprocessSummary:
    label_files = tuple(DATASETS[n].label_file for n in datasets) + (INSTANCE_FILE,)
    summary = PreprocessSummary()
    for folder in (out, *(out / split for split in meta.SCENE_SPLITS)):
        summary.removed_temporaries += len(remove_temporaries(folder))
    if summary.removed_temporaries:
        log.info("%s: removed %d temporary file(s) or folder(s) an interrupted run left", out, summary.removed_temporaries)
    tasks: list[SceneTask] = []
    for split in meta.SCENE_SPLITS:
        if not (raw / RAW_SCAN_FOLDER[split]).is_dir():
            summary.missing_splits.append(split)
            continue
        labelled = split in LABELLED_SPLITS
        for scene in lists[split]:
            src, dst = raw_scene_dir(raw, split, scene), scene_dir(out, split, scene)
            if not overwrite and is_finished(dst, labelled, label_files):  # needs no raw files any more
                summary.skipped.append(scene)
            elif not src.is_dir():
                summary.failed[scene] = str(RawSceneError(scene, f"{RAW_SCAN_FOLDER[split]}/{scene}", "missing folder"))
            else:
                tasks.append(SceneTask(scene, src, dst, labelled, align, datasets))

    results = _run(tasks, workers, progress)
    unknown_names: set[str] = set()
    for task in tasks:  # list order, whatever order the workers finished in
        res = results[task.scene]
        if res.error is None:
            summary.done.append(task.scene)
            summary.unknown_category_vertices += res.unknown_vertices
            unknown_names.update(res.unknown_categories)
            if res.labelled_vertices == 0:
                summary.without_labels.append(task.scene)
            dangling, aggregated = res.dangling
            if dangling > DANGLING_SHARE * aggregated:
                summary.dangling[task.scene] = [dangling, aggregated]
        else:
            summary.failed[task.scene] = res.error
    summary.unknown_categories = sorted(unknown_names)

    # Scenes skipped now keep what the run that wrote them found (only the raw files tell).
    try:
        for name in datasets:  # the first dataset's statistics file is the one reported
            spec = DATASETS[name]
            found = read_dangling(out / spec.stats_file)
            dangling = {s: v for s, v in found.items() if s in summary.skipped}
            path = write_stats(out, lists, LABELLED_SPLITS, {**dangling, **summary.dangling}, spec)
            summary.stats_path = summary.stats_path or path
    except (OSError, ValueError) as e:  # the scenes' summary is still worth reporting
        summary.stats_error = one_line(e)
    return summary


def _run(tasks: list[SceneTask], workers: int, progress: bool) -> dict[str, SceneResult]:
    results: dict[str, SceneResult] = {}
    if workers <= 1 or len(tasks) <= 1:
        with tqdm(total=len(tasks), desc="preprocess", unit="scene", disable=not progress) as bar:
            for task in tasks:
                results[task.scene] = process_scene(task)
                bar.update()
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        # Submit before the bar exists: workers are forked at the first submit, and forking is
        # safest before tqdm starts its monitor thread.
        futures = {pool.submit(process_scene, t): t for t in tasks}
        with tqdm(total=len(tasks), desc="preprocess", unit="scene", disable=not progress) as bar:
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    results[task.scene] = fut.result()
                except Exception as e:  # noqa: BLE001 - e.g. a worker killed by the OS
                    problem = " ".join(f"{type(e).__name__}: {e}".split())
                    error = f"{task.scene}: {task.dst}: worker failed ({problem})"
                    results[task.scene] = SceneResult(task.scene, error)
                bar.update()
    return results
