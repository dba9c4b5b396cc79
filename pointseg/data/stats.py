"""Per-class point and scene counts of a split: the one reader of ``DATA/stats.json``, and the one
place that turns those counts into class priors p_k and class weights w_k (the long-tail losses,
post-hoc logit adjustment and CeCo's log prior all use :func:`class_prior` / :func:`class_weights`).

Preprocessing writes the counts into ``stats.json``. Folders preprocessed elsewhere (Pointcept's
ScanNet200 folders) have none; then the counts come from reading every
``<split>/<scene>/segment200.npy`` once, and the result is cached under the user's cache folder,
keyed by the folder's absolute path and checked against its scene list and each label file's
size, modification time and inode, so a second run (or the other processes of a distributed run)
does not read the labels again, and a relabelled folder is counted anew.

All of this is per dataset (``DatasetSpec``; default ScanNet200): its label file, its statistics
file (``stats.json`` for ScanNet200, ``stats_scannet20.json`` for ScanNet20) and, for a class
subset, the parent's counts restricted to the kept classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointseg.data.scene import INSTANCE_SCENE_FILE, SEGMENT_FILE, is_finished, num_points, scene_dir
from pointseg.datasets import DatasetSpec, default_spec
from pointseg.meta import IGNORE_INDEX, NUM_CLASSES
from pointseg.utils.io import atomic_write_text, load_npy

log = logging.getLogger(__name__)

STATS_FILE = "stats.json"
# Per-class arrays of one split in DATA/stats.json.
POINT_COUNT_KEY = "class_point_counts"
SCENE_COUNT_KEY = "class_scene_counts"
# What a prior or a class weight counts: a class's training points, or the training scenes holding it.
COUNT_KINDS = ("points", "scenes")
# A class with no training count: "rarest" counts it as the rarest present class (finite log prior
# and weight, and it never outweighs a class that was seen); "zero" keeps p_k = 0.
ABSENT_RULES = ("rarest", "zero")
# Class-weight schemes: 1/n_k, 1/sqrt(n_k), and the effective number of samples (Cui et al., CVPR 2019).
WEIGHT_SCHEMES = ("inverse", "inverse_sqrt", "effective_number")


@dataclass(frozen=True)
class ClassCounts:
    """Per-class point and scene (= center) counts of one split."""

    points: np.ndarray  # int64 (K,)
    scenes: np.ndarray  # int64 (K,): number of scenes in which the class has ≥ 1 point
    source: str  # where the numbers came from
    num_scenes: int | None = None  # scenes in the split, when known


def per_class_counts(counts: ClassCounts | Sequence[float] | np.ndarray, by: str = "points") -> np.ndarray:
    """float64 (K,) counts: a :class:`ClassCounts`' points or scenes (``by``), or K given numbers
    (counts or probabilities), checked finite, non-negative and not all zero."""
    if by not in COUNT_KINDS:
        raise ValueError(f"class counts: 'by' must be one of {list(COUNT_KINDS)}, got {by!r}")
    if isinstance(counts, ClassCounts):
        counts = counts.points if by == "points" else counts.scenes
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.isfinite(n).all() or (n < 0).any():
        raise ValueError(f"class counts: need a list of finite, non-negative numbers, got {np.asarray(counts).tolist()!r}")
    if not n.sum() > 0:
        raise ValueError("class counts: every class count is zero")
    return n


def _floored(n: np.ndarray, absent: str) -> np.ndarray:
    if absent not in ABSENT_RULES:
        raise ValueError(f"class counts: 'absent' must be one of {list(ABSENT_RULES)}, got {absent!r}")
    return n if absent == "zero" else np.where(n > 0, n, n[n > 0].min())


def class_prior(counts: ClassCounts | Sequence[float] | np.ndarray, by: str = "points", absent: str = "rarest") -> np.ndarray:
    """p_k = n_k / Σ_j n_j (float64, sums to 1) of the training counts ``by`` points or scenes.

    A class with no count (absent from the training split, e.g. the 180 classes of ScanNet200's
    label space that the long-tailed benchmark never uses) gets, by default (``absent="rarest"``),
    the count of the rarest present class: log p_k stays finite, so a logit adjustment neither
    breaks on it nor favours it over a class that was seen. ``absent="zero"`` keeps p_k = 0
    (CeCo's released prior, which then adds 1e-12 itself).
    """
    n = _floored(per_class_counts(counts, by), absent)
    return n / n.sum()


def class_weights(
    counts: ClassCounts | Sequence[float] | np.ndarray,
    scheme: str = "effective_number",
    beta: float = 0.999,
    by: str = "points",
) -> np.ndarray:
    """Per-class loss weights w_k (float64) from training counts n_k (``by`` points or scenes).

    ``inverse``: 1/n_k; ``inverse_sqrt``: 1/sqrt(n_k); ``effective_number`` (Cui et al., CVPR
    2019): (1 − β)/(1 − β^{n_k}), the inverse of the effective number of samples, from 1 (β = 0)
    to 1/n_k (β → 1). Normalized so that Σ_k w_k n_k / Σ_k n_k = 1: the mean weight of a
    training point is 1, so a weighted loss keeps the scale of the unweighted one (and λ of CeCo
    its meaning); Cui et al. normalize Σ_k w_k = K instead, which for the point counts of a long
    tail makes the mean point weight far below 1. A class with no count gets the weight of the
    rarest present class (it never appears as a training target, so its weight only matters for
    a label outside the training split).
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"class weights: unknown scheme {scheme!r}; expected one of {list(WEIGHT_SCHEMES)}")
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"class weights: beta must be in [0, 1), got {beta}")
    raw = per_class_counts(counts, by)
    n = _floored(raw, "rarest")
    if scheme == "inverse":
        w = 1.0 / n
    elif scheme == "inverse_sqrt":
        w = 1.0 / np.sqrt(n)
    elif beta == 0.0:
        w = np.ones_like(n)
    else:  # 1 − β^n as −expm1(n log β): exact for β near 1, where β^n and 1 − β cancel badly
        w = np.expm1(np.log(beta)) / np.expm1(n * np.log(beta))
    return w * raw.sum() / float((w * raw).sum())


def train_class_counts(
    data_root: str | Path | None, num_classes: int, needed_by: str, spec: DatasetSpec | None = None
) -> ClassCounts:
    """The training split's counts of ``data_root`` for ``needed_by`` (a config key, named in errors)."""
    if data_root is None:
        raise ValueError(f"{needed_by} needs data.root (the training scenes' class counts)")
    try:
        return load_class_counts(data_root, "train", num_classes, spec=spec)
    except FileNotFoundError as e:
        stats_file = STATS_FILE if spec is None else spec.stats_file
        raise ValueError(
            f"{needed_by} needs the class counts of the training scenes: {data_root} has no "
            f"{stats_file} with them and {e} (preprocess the data first)"
        ) from e


def count_split(
    data_root: str | Path, split: str = "train", num_classes: int = NUM_CLASSES, label_file: str = SEGMENT_FILE
) -> ClassCounts:
    """Count by reading every ``DATA/<split>/<scene>/<label_file>`` (class index or −1)."""
    split_dir = Path(data_root) / split
    files = sorted(split_dir.glob(f"*/{label_file}"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no <scene>/{label_file} found")
    points = np.zeros(num_classes, dtype=np.int64)
    scenes = np.zeros(num_classes, dtype=np.int64)
    for f in files:
        seg = load_npy(f)
        if seg.ndim != 1 or not np.issubdtype(seg.dtype, np.integer):
            raise ValueError(f"{f}: expected a 1-D integer array, got {seg.dtype} {seg.shape}")
        seg = seg.astype(np.int64)
        bad = (seg != IGNORE_INDEX) & ((seg < 0) | (seg >= num_classes))
        if bad.any():
            raise ValueError(f"{f}: label {int(seg[bad][0])} outside 0..{num_classes - 1} and not {IGNORE_INDEX}")
        n = np.bincount(seg[seg >= 0], minlength=num_classes)
        points += n
        scenes += n > 0
    return ClassCounts(points, scenes, f"{split_dir}/*/{label_file} ({len(files)} scenes)", len(files))


def read_stats(path: str | Path, split: str = "train", num_classes: int = NUM_CLASSES) -> ClassCounts | None:
    """Per-class counts of ``split`` from a ``stats.json``; ``None`` when it lacks them.

    Layout: ``{"splits": {split: {"class_point_counts": [K ints], "class_scene_counts": [K ints]}}}``
    (lists of K counts, or objects keyed by class index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read JSON ({e})") from e
    splits = data.get("splits") if isinstance(data, dict) else None
    section = splits.get(split) if isinstance(splits, dict) else None
    if not isinstance(section, dict) or not {POINT_COUNT_KEY, SCENE_COUNT_KEY} <= section.keys():
        return None
    arrays = [
        _per_class_array(section[key], num_classes, f"{path}: splits.{split}.{key}")
        for key in (POINT_COUNT_KEY, SCENE_COUNT_KEY)
    ]
    num_scenes = section.get("num_scenes")
    if num_scenes is not None and (not isinstance(num_scenes, int) or isinstance(num_scenes, bool) or num_scenes < 0):
        raise ValueError(f"{path}: splits.{split}.num_scenes must be a non-negative integer, got {num_scenes!r}")
    return ClassCounts(arrays[0], arrays[1], str(path), num_scenes)


def _per_class_array(value, num_classes: int, where: str) -> np.ndarray:
    """A list of K counts, or a dict keyed by class index (as strings in JSON)."""
    out = np.zeros(num_classes, dtype=np.int64)
    try:
        if isinstance(value, list):
            if len(value) != num_classes:
                raise ValueError(f"expected {num_classes} counts, got {len(value)}")
            out[:] = [_count(v) for v in value]
        elif isinstance(value, dict):
            for k, v in value.items():
                i = int(k)
                if not 0 <= i < num_classes:
                    raise ValueError(f"class index {k} outside 0..{num_classes - 1}")
                out[i] = _count(v)
        else:
            raise ValueError(f"expected a list or an object of counts, got {type(value).__name__}")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e
    return out


def _count(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
        raise ValueError(f"counts must be non-negative integers, got {v!r}")
    return int(v)


def _cache_file(data_root: Path, split: str, num_classes: int, label_file: str = SEGMENT_FILE) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pointseg" / "class_counts"
    name = "" if label_file == SEGMENT_FILE else f"|{label_file}"  # ScanNet200's keys as before
    key = hashlib.sha1(f"{data_root.resolve()}|{split}|{num_classes}{name}".encode()).hexdigest()[:16]
    return base / f"{key}.json"


def _scene_list(data_root: Path, split: str, label_file: str = SEGMENT_FILE) -> list[list]:
    """The cache key: per scene its name and its label file's size, mtime and inode, so that a
    relabelled folder (same scene names, new ``segment200.npy``) is counted again."""
    key = []
    for path in sorted((data_root / split).glob(f"*/{label_file}")):
        st = path.stat()
        key.append([path.parent.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return key


def load_class_counts(
    data_root: str | Path,
    split: str = "train",
    num_classes: int = NUM_CLASSES,
    cache: bool = True,
    spec: DatasetSpec | None = None,
) -> ClassCounts:
    """Counts from ``DATA/stats.json`` (the ``spec``'s statistics file) when it has them, else
    counted from the scenes (cached). With ``spec``, ``num_classes`` must be its class count; a
    class subset gets its parent's counts of the kept classes."""
    if spec is None:
        return _load_file_counts(Path(data_root), split, num_classes, cache, STATS_FILE, SEGMENT_FILE)
    if int(num_classes) != spec.num_classes:
        raise ValueError(f"class counts: {num_classes} classes asked for, dataset {spec.name!r} has {spec.num_classes}")
    counts = _load_file_counts(Path(data_root), split, spec.file_classes, cache, spec.stats_file, spec.label_file)
    if spec.from_file is None:
        return counts
    kept = np.flatnonzero(spec.from_file >= 0)
    order = kept[np.argsort(spec.from_file[kept])]  # file class index of subset class 0..K−1
    return ClassCounts(counts.points[order], counts.scenes[order], f"{counts.source}, classes of {spec.name}", counts.num_scenes)


def _load_file_counts(
    root: Path, split: str, num_classes: int, cache: bool, stats_file: str, label_file: str
) -> ClassCounts:
    stats_path = root / stats_file
    if stats_path.is_file():
        counts = read_stats(stats_path, split, num_classes)
        if counts is not None:
            return counts
        log.warning("%s: no per-class counts for split %r; counting the scenes instead", stats_path, split)
    cache_path = _cache_file(root, split, num_classes, label_file) if cache else None
    scenes = _scene_list(root, split, label_file)
    if cache_path is not None and cache_path.is_file():
        try:
            cached = json.loads(cache_path.read_text(encoding="utf-8"))
            if cached.get("scenes") == scenes:
                log.info("class counts of %s/%s from the cache %s", root, split, cache_path)
                return ClassCounts(
                    np.asarray(cached["points"], dtype=np.int64), np.asarray(cached["scenes_with_class"], dtype=np.int64),
                    f"{root / split}/*/{label_file} ({len(scenes)} scenes, cached in {cache_path})", len(scenes),
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a stale or broken cache is recounted and rewritten
    log.info("%s has no class counts: counting %s/%s/*/%s once", stats_path, root, split, label_file)
    counts = count_split(root, split, num_classes, label_file)
    if cache_path is not None:
        payload = {"root": str(root.resolve()), "split": split, "scenes": scenes,
                   "points": counts.points.tolist(), "scenes_with_class": counts.scenes.tolist()}
        try:
            atomic_write_text(cache_path, json.dumps(payload) + "\n")
        except OSError as e:  # a read-only home only costs the recount next time
            log.warning("cannot cache class counts in %s (%s)", cache_path, e)
    return counts


def compute_stats(
    root: str | Path, lists: dict[str, Sequence[str]], labelled_splits: Sequence[str], spec: DatasetSpec | None = None
) -> dict:
    """Per-split class statistics of ``spec`` (default ScanNet200; its label file, as stored)
    over every finished scene folder of the lists.

    ``class_point_counts[k]`` counts the points of class index k, ``class_scene_counts[k]`` the
    scenes with at least one; ``imbalance_factor`` is max/min point count over the classes present
    (null when none is). Unlabelled (test) scenes give only scene and point counts.
    ``scenes_without_labels`` names the labelled scenes in which no vertex has a class: they
    count, but teach nothing (an annotation that does not match its mesh?).
    """
    spec = default_spec() if spec is None else spec
    if spec.from_file is not None:
        raise ValueError(f"compute_stats: {spec.name!r} is a class subset; its counts are its parent's")
    k = spec.num_classes
    stats: dict = {"class_names": list(spec.names), f"{spec.id_name}s": spec.ids.tolist(), "splits": {}}
    if spec.name != "scannet200":
        stats = {"dataset": spec.name, **stats}  # stats.json of ScanNet200 stays as it was
    label_files = (spec.label_file, INSTANCE_SCENE_FILE)
    for split, scenes in lists.items():
        labelled = split in labelled_splits
        folders = [
            scene_dir(root, split, s) for s in scenes if is_finished(scene_dir(root, split, s), labelled, label_files)
        ]
        entry: dict = {"num_scenes": len(folders), "num_points": 0}
        points = np.zeros(k, dtype=np.int64)
        with_class = np.zeros(k, dtype=np.int64)
        ignored = 0
        without_labels = []
        for folder in folders:
            if not labelled:
                entry["num_points"] += num_points(folder)
                continue
            seg = load_npy(folder / spec.label_file).astype(np.int64)
            valid = (seg >= 0) & (seg < k)
            counts = np.bincount(seg[valid], minlength=k)
            points += counts
            with_class += counts > 0
            ignored += int((~valid).sum())
            entry["num_points"] += len(seg)
            if not valid.any():
                without_labels.append(folder.name)
        if labelled:
            present = points[points > 0]
            entry.update(
                num_ignored_points=ignored,
                class_point_counts=points.tolist(),
                class_scene_counts=with_class.tolist(),
                num_classes_present=int(len(present)),
                imbalance_factor=float(present.max() / present.min()) if len(present) else None,
                scenes_without_labels=without_labels,
            )
        stats["splits"][split] = entry
    return stats


def write_stats(
    root: str | Path,
    lists: dict[str, Sequence[str]],
    labelled_splits: Sequence[str],
    dangling: dict[str, list[int]] | None = None,
    spec: DatasetSpec | None = None,
) -> Path:
    """Write ``DATA/<spec.stats_file>`` (:func:`compute_stats`; ``stats.json`` for ScanNet200)
    atomically; returns its path.

    ``dangling`` (scene → [dangling, aggregated] segment ids, found while reading the raw files)
    goes into each labelled split's ``scenes_with_dangling_segments``.
    """
    spec = default_spec() if spec is None else spec
    stats = compute_stats(root, lists, labelled_splits, spec)
    for split in labelled_splits:
        if split in stats["splits"]:
            stats["splits"][split]["scenes_with_dangling_segments"] = {
                s: list(dangling[s]) for s in lists[split] if dangling and s in dangling
            }
    path = Path(root) / spec.stats_file
    atomic_write_text(path, json.dumps(stats, indent=1) + "\n")
    return path


def read_dangling(path: str | Path) -> dict[str, list[int]]:
    """The ``scenes_with_dangling_segments`` of every split of a ``stats.json`` (a rerun keeps
    those of the scenes it skips); empty when the file is absent or unreadable."""
    try:
        splits = json.loads(Path(path).read_text(encoding="utf-8"))["splits"]
        return {s: list(v) for entry in splits.values() for s, v in entry.get("scenes_with_dangling_segments", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
