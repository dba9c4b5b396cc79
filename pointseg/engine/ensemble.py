"""Loading the checkpoints of an evaluation: one model, or several voting as an ensemble.

Every checkpoint must have been trained on data prepared the way the evaluation prepares it
(voxel size, input features) and predict the same label set, ScanNet200's unless a label map
says how its classes map to ScanNet200 (``evaluation.label_map``); a mismatch is an error naming
the checkpoint, the setting and both values, never a silently partial score.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from pointseg.datasets import spec_of
from pointseg.engine.checkpoint import load_for_inference
from pointseg.engine.config import load_config
from pointseg.evaluation.label_map import check_label_set

# Settings a checkpoint's model depends on: the evaluation data must be built the same way.
MUST_MATCH = ("data.voxel_size", "data.features", "model.num_classes", "model.in_channels")


def _select(cfg: Any, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def load_ensemble(
    checkpoints: Sequence[str | os.PathLike],
    overrides: Sequence[str] = (),
    config: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    label_map: np.ndarray | None = None,
) -> tuple[list[torch.nn.Module], Any]:
    """The evaluation models of ``checkpoints`` and the config the evaluation runs with (``config``
    if given, else the first checkpoint's), ``overrides`` applied to all of them. Models whose
    classes are not ScanNet200's need ``label_map`` (``read_label_map``)."""
    if not checkpoints:
        raise ValueError("load_ensemble: no checkpoint given")
    models, cfgs = [], []
    for path in checkpoints:
        model, cfg = load_for_inference(path, overrides, device=device)
        models.append(model)
        cfgs.append(cfg)
    cfg = load_config(config, overrides) if config else cfgs[0]
    check_members(checkpoints, cfgs, cfg)
    check_label_set(checkpoints[0], int(cfg.model.num_classes), label_map, spec_of(cfg.data))
    return models, cfg


def check_members(checkpoints: Sequence[str | os.PathLike], cfgs: Sequence[Any], cfg: Any) -> None:
    """Raise naming the first checkpoint whose config differs from ``cfg`` in a ``MUST_MATCH`` setting."""
    for path, c in zip(checkpoints, cfgs):
        for key in MUST_MATCH:
            if _select(c, key) != _select(cfg, key):
                raise ValueError(f"{path}: {key} is {_select(c, key)!r} but the evaluation uses {_select(cfg, key)!r}")
