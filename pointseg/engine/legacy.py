"""Checkpoints of earlier layouts, upgraded on load to today's.

Format 2 kept the CeCo center branch in a slot of its own (``center_loss.*`` state-dict keys) and
a copy of its ETF in the checkpoint (``etf``); today the branch is the auxiliary loss ``ceco``
(``aux_losses.ceco.*``) and the ETF is only in the state dict. 0.1.0 kept the point classifier inside the backbone (``backbone.classifier.*``), had no
``model.bn_momentum`` (PyTorch's 0.1 was used), and its ``ceco`` section described the center
branch of Eq. 3-4 (centers of the raw features, frozen Linear+ReLU, no dropout) with a boolean or
list ``logit_adjust`` instead of ``prior``. Checkpoints of today carry ``format`` = 3; one without
it is a 0.1.0 checkpoint.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

CHECKPOINT_FORMAT = 3
# 0.1.0 state-dict prefix → format 2's.
_RENAMES = (("backbone.classifier.", "classifier."),)
# Format 2 state-dict prefix → today's.
_RENAMES_2 = (("center_loss.", "aux_losses.ceco."),)
# Keys of 0.1.0's fixed-ETF point classifier (frozen ReLU projection), which has no counterpart.
_UNSUPPORTED = ("backbone.classifier.projection.", "backbone.classifier.etf")


def is_legacy(ckpt: dict[str, Any]) -> bool:
    return "format" not in ckpt


def _renamed(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    bare = key.removeprefix("module.")
    for old, new in renames:
        if bare.startswith(old):
            return key[: len(key) - len(bare)] + new + bare[len(old):]
    return key


def upgrade_state_dict(state: dict[str, Any], where: str = "checkpoint") -> "OrderedDict[str, Any]":
    """Rename 0.1.0 keys to format 2's (also under a DDP ``module.`` prefix); other keys pass unchanged."""
    out: "OrderedDict[str, Any]" = OrderedDict()
    for key, value in state.items():
        if key.removeprefix("module.").startswith(_UNSUPPORTED):
            raise ValueError(
                f"{where}: holds 0.1.0's fixed-ETF point classifier (a frozen ReLU projection), which "
                "today's etf point classifier (a learned lift) replaced; it cannot be loaded"
            )
        out[_renamed(key, _RENAMES)] = value
    return out


def upgrade_state_dict_2(state: dict[str, Any]) -> "OrderedDict[str, Any]":
    """Format 2's keys in today's: the center branch ``center_loss.*`` is ``aux_losses.ceco.*``."""
    return OrderedDict((_renamed(k, _RENAMES_2), v) for k, v in state.items())


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """0.1.0's config dict in today's keys, meaning the same model and training."""
    cfg = copy.deepcopy(config)
    model = cfg.setdefault("model", {})
    model.setdefault("bn_momentum", 0.1)
    ceco = cfg.get("ceco")
    if isinstance(ceco, dict):
        adjust = ceco.pop("logit_adjust", False)
        if isinstance(adjust, (list, tuple)):
            prior: Any = list(adjust)
        else:
            prior = "points" if adjust else "none"
        ceco.setdefault("head", "paper_eq4")
        ceco.setdefault("prior", prior)
        ceco.setdefault("reduce_dim", 0)
        ceco.setdefault("dropout", 0.0)
    train = cfg.get("train")
    if isinstance(train, dict):
        train.setdefault("sync_bn", False)
    return cfg


def upgrade_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """A 0.1.0 or format-2 checkpoint in today's layout (a shallow copy); today's checkpoints are
    returned as they are."""
    if not is_legacy(ckpt) and int(ckpt["format"]) >= CHECKPOINT_FORMAT:
        return ckpt
    out = dict(ckpt)
    if is_legacy(ckpt):
        out["model"] = upgrade_state_dict(ckpt["model"], where)
        out["config"] = upgrade_config(ckpt["config"])
    out["model"] = upgrade_state_dict_2(out["model"])
    out.pop("etf", None)  # a copy of the center branch's buffer, which the state dict holds
    out["format"] = CHECKPOINT_FORMAT
    return out
