"""Collapse metrics of trained checkpoints: run the eval model over a split, stream its features.

The pure statistics live in :mod:`pointseg.analysis.collapse`; this module only feeds them: it
loads each checkpoint for inference, runs it scene by scene over the split (dataset in ``val``
mode: voxelized, labelled, not augmented), and hands every batch's decoder features and labels to
a :class:`CollapseAccumulator`, so memory stays bounded whatever the split size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pointseg.analysis.collapse import CollapseAccumulator
from pointseg.analysis.plots import plot_collapse_curves
from pointseg.meta import NUM_CLASSES, class_table
from pointseg.utils.io import atomic_write_text


@torch.no_grad()
def classifier_weight(classifier: nn.Module, feature_dim: int) -> torch.Tensor | None:
    """(K, D) rows w_k of the point classifier, as the logits see them (``logit_k = w_k·h + b_k``).

    An ``nn.Linear`` gives its weight. Other classifiers (the fixed-ETF point classifier with a
    projection) are probed with the identity, W = (f(I) − f(0))ᵀ; if they are not affine (a
    check on random inputs fails) there are no classifier vectors and ``None`` is returned.
    """
    if isinstance(classifier, nn.Linear):
        return classifier.weight.detach().cpu().double()
    p = next(iter(classifier.parameters()), None)
    b = next(iter(classifier.buffers()), None)
    ref = p if p is not None else b
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, "cpu")
    eye = torch.eye(feature_dim, dtype=dtype, device=device)
    zero = torch.zeros(1, feature_dim, dtype=dtype, device=device)
    f0 = classifier(zero)
    w = (classifier(eye) - f0).T  # (K, D)
    x = torch.randn(4, feature_dim, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    if not torch.allclose(classifier(x), x @ w.T + f0, rtol=1e-3, atol=1e-4):
        return None
    return w.detach().cpu().double()


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


def split_groups(num_classes: int) -> dict[str, np.ndarray]:
    """head / common / tail masks for the ScanNet200 label space, none for other class counts."""
    return class_table().split_masks if num_classes == NUM_CLASSES else {}


def analyze_checkpoint(
    path: str | os.PathLike,
    split: str,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    max_scenes: int | None = None,
    progress: bool = True,
    data_cfg=None,
    weighting: str = "class",
) -> dict:
    """Collapse metrics of one checkpoint over ``split``: ``{checkpoint, iteration, split, metrics, ...}``.

    The model and, unless ``data_cfg`` (a ``data`` config section) is given, the data settings
    come from the checkpoint's stored config with ``overrides`` applied.
    """
    from torch.utils.data import DataLoader, Subset

    from pointseg.data import build_dataset
    from pointseg.data.collate import collate
    from pointseg.engine.checkpoint import load_for_inference

    model, cfg = load_for_inference(path, overrides, device=device)
    num_classes = int(cfg.model.num_classes)
    feature_dim = int(model.backbone.feature_dim)
    dataset = build_dataset(cfg.data if data_cfg is None else data_cfg, split, mode="val")
    if max_scenes is not None:
        dataset = Subset(dataset, range(min(max_scenes, len(dataset))))
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, collate_fn=collate)
    acc = accumulate(model, loader, num_classes, feature_dim, device, progress, desc=Path(path).name)
    w = classifier_weight(model.backbone.classifier, feature_dim)
    return {
        "checkpoint": str(path),
        "iteration": checkpoint_iteration(path),
        "split": split,
        "num_scenes": len(dataset),
        "metrics": acc.evaluate(w, split_groups(num_classes), weighting),
    }


def write_collapse_report(records: Sequence[dict], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``collapse.json`` (the records, in checkpoint order) and ``collapse.png`` (their curves)."""
    out = Path(out_dir)
    json_path, png_path = out / "collapse.json", out / "collapse.png"
    atomic_write_text(json_path, json.dumps({"checkpoints": list(records)}, indent=1) + "\n")
    plot_collapse_curves(records, png_path)
    return json_path, png_path
