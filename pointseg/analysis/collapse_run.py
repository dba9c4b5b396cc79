"""Collapse metrics of trained checkpoints: run the eval model over a split, stream its features.

The pure statistics live in :mod:`pointseg.analysis.collapse`; this module only feeds them: it
loads each checkpoint for inference, runs it scene by scene over the split (dataset in ``val``
mode: voxelized, labelled, not augmented), and hands every batch's decoder features and labels to
a :class:`CollapseAccumulator`, so memory stays bounded whatever the split size.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pointseg.analysis.collapse import CollapseAccumulator, center_space_metrics
from pointseg.analysis.plots import plot_collapse_curves
from pointseg.datasets import DatasetSpec
from pointseg.engine.config import to_plain_dict
from pointseg.losses.ceco import CenterCollapseLoss
from pointseg.meta import NUM_CLASSES, class_table
from pointseg.models.segmentor import CENTER_BRANCH_PREFIX
from pointseg.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def center_branch_for(state: dict, cfg: Any, feature_dim: int) -> CenterCollapseLoss:
    """The center branch whose space the CeCo metrics are measured in, in eval mode.

    A CeCo run's own branch, built from its ``ceco`` section, with the checkpoint's stored maps
    when it has them (an exported inference checkpoint does not: the frozen maps are then rebuilt
    from ``ceco.etf_seed``, identical by construction, while a learned center classifier or
    projection cannot be, which is logged). For a run without CeCo, the default head built with the
    config's ``etf_seed``, so that a baseline and a CeCo run are measured through the same maps.
    No prior is needed to embed centers.
    """
    ceco = dict(to_plain_dict(cfg.ceco))  # a checkpoint's config is complete (config_from_dict)
    enabled = bool(ceco["enabled"])
    spec = {**ceco, "prior": "none"} if enabled else {"etf_seed": ceco["etf_seed"], "prior": "none"}
    branch = CenterCollapseLoss.from_config(spec, feature_dim, int(cfg.model.num_classes))
    sub = {k[len(CENTER_BRANCH_PREFIX):]: v for k, v in state.items() if k.startswith(CENTER_BRANCH_PREFIX)}
    if enabled and sub:
        sub.pop("log_prior", None)
        branch.load_state_dict(sub, strict=True)
    elif enabled:
        log.warning(
            "checkpoint without its center branch: CeCo's space is rebuilt from ceco.etf_seed "
            "(exact for frozen maps; a learned center classifier or projection is at its initial value)"
        )
    return branch.eval()


def shared_center_branch(cfg: Any, feature_dim: int) -> CenterCollapseLoss:
    """The released head with the run's ``ceco.etf_seed``, in eval mode: one center space for every
    run, whatever its own head (a CeCo run with the paper's Eq. 4 head, a learned projection or
    none is also measured here, so that arms are compared in the same space as well as in their
    own). Its maps are frozen and seeded, so they need nothing from the checkpoint."""
    spec = {"etf_seed": int(cfg.ceco.etf_seed), "prior": "none"}
    return CenterCollapseLoss.from_config(spec, feature_dim, int(cfg.model.num_classes)).eval()


def center_space(branch: CenterCollapseLoss, acc: CollapseAccumulator, groups: dict[str, np.ndarray] | None) -> dict:
    """:func:`center_space_metrics` through ``branch``'s reduce / BatchNorm and projection.

    The BatchNorm is applied with the split's own statistics (mean and variance of the reduced
    features over the labelled points of the split, not augmented): an approximation of the batch
    statistics of training, which come from all points, labelled or not, of augmented batches.
    """

    def reduce(means: np.ndarray, total_cov: np.ndarray) -> np.ndarray:
        r = branch.reduce.weight.double().numpy()  # (R, D)
        mu = acc.global_mean("point")
        var = np.einsum("rd,de,re->r", r, total_cov, r)
        return (means - mu) @ r.T / np.sqrt(var + branch.reduce.norm.eps)

    def embed(pooled: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return branch.double().center_embedding(torch.from_numpy(pooled)).numpy()

    classifier = branch.classifier_weight().detach().double().numpy()
    return center_space_metrics(acc, None if branch.reduce is None else reduce, embed, classifier, groups)


@torch.no_grad()
def accumulate(
    model: nn.Module,
    batches: Iterable[dict],
    num_classes: int,
    feature_dim: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "features",
) -> CollapseAccumulator:
    """Stream ``model(batch)["feat"]`` with ``batch["segment"]`` (−1 ignored) into an accumulator."""
    acc = CollapseAccumulator(num_classes, feature_dim)
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        if "segment" not in batch:
            raise KeyError("collapse metrics need labels: the batch has no 'segment'")
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model(inputs)
        acc.process(out["feat"], batch["segment"])
    return acc


def checkpoint_iteration(path: str | os.PathLike) -> int | None:
    """The ``iteration`` stored in a checkpoint (memory-mapped: the weights are not read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    it = ckpt.get("iteration") if isinstance(ckpt, dict) else None
    return None if it is None else int(it)


def split_groups(num_classes: int, spec: DatasetSpec | None = None) -> dict[str, np.ndarray]:
    """The evaluation groups of ``spec`` (head / common / tail for ScanNet200 and its subsets,
    none for ScanNet20); without a spec, ScanNet200's for 200 classes and none otherwise."""
    if spec is not None and spec.num_classes == num_classes:
        return spec.group_masks
    return class_table().split_masks if num_classes == NUM_CLASSES else {}


def analyze_checkpoint(
    path: str | os.PathLike,
    split: str = "train",
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    max_scenes: int | None = None,
    progress: bool = True,
    data_cfg: Any = None,
    weighting: str = "point",
) -> dict:
    """Collapse metrics of one checkpoint over ``split`` (the paper's Fig. 2 uses the train split):
    ``{checkpoint, iteration, split, metrics, center_metrics, ...}``.

    ``metrics`` are in the backbone's feature space with the point classifier's rows;
    ``center_metrics`` in the run's own center embedding (see :func:`center_branch_for`),
    ``center_metrics_shared`` in the released head's, the same for every run
    (:func:`shared_center_branch`). The model and,
    unless ``data_cfg`` (a ``data`` config section) is given, the data settings come from the
    checkpoint's stored config with ``overrides`` applied.
    """
    from torch.utils.data import DataLoader, Subset

    from pointseg.data import build_dataset
    from pointseg.data.collate import collate
    from pointseg.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)  # read once: the model, the center branch's maps and the iteration
    model, cfg = model_from_checkpoint(ckpt, path, overrides, device=device)
    num_classes = int(cfg.model.num_classes)
    feature_dim = int(model.backbone.feature_dim)
    dataset = build_dataset(cfg.data if data_cfg is None else data_cfg, split, mode="val")
    spec = dataset.spec
    if max_scenes is not None:
        dataset = Subset(dataset, range(min(max_scenes, len(dataset))))
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, collate_fn=collate)
    acc = accumulate(model, loader, num_classes, feature_dim, device, progress, desc=Path(path).name)
    w = model.classifier.weight_matrix().detach().cpu().double()
    groups = split_groups(num_classes, spec)
    return {
        "checkpoint": str(path),
        "iteration": None if ckpt.get("iteration") is None else int(ckpt["iteration"]),
        "split": split,
        "num_scenes": len(dataset),
        "metrics": acc.evaluate(w, groups, weighting),
        "center_metrics": center_space(center_branch_for(ckpt["model"], cfg, feature_dim), acc, groups),
        "center_metrics_shared": center_space(shared_center_branch(cfg, feature_dim), acc, groups),
    }


def write_collapse_report(records: Sequence[dict], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``collapse.json`` (the records, in checkpoint order) and ``collapse.png`` (their curves)."""
    out = Path(out_dir)
    json_path, png_path = out / "collapse.json", out / "collapse.png"
    atomic_write_text(json_path, json.dumps({"checkpoints": list(records)}, indent=1) + "\n")
    plot_collapse_curves(records, png_path)
    return json_path, png_path
