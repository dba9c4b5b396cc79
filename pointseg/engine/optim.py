"""Optimizers and per-iteration learning-rate schedules, and their config sections (``optim``, ``sched``).

Schedules are stepped once per optimizer step (iteration), never per epoch, so a run's length
is ``train.iterations`` whatever the dataset size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from pointseg.utils.schema import in_range, non_negative, one_of, param, positive, typed, validate_section

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "SGD": torch.optim.SGD,
    "AdamW": torch.optim.AdamW,
}
# The keys of ``optim`` each optimizer takes (it ignores the others).
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    "AdamW": ("lr", "betas", "eps", "weight_decay"),
}


@dataclass
class OptimConfig:
    """The ``optim`` section: the keys of every optimizer, each used by those that take it."""

    name: str = param("SGD", "[LG] SGD | AdamW", one_of(*OPTIMIZERS))
    lr: float = param(0.05, "[LG] base learning rate", positive)
    momentum: float = param(0.9, "[LG] SGD momentum", in_range(0.0, 1.0))
    dampening: float = param(0.1, "[LG] SGD dampening", in_range(0.0, 1.0))
    weight_decay: float = param(1e-4, "[LG] L2 weight decay (AdamW: decoupled)", non_negative)
    nesterov: bool = param(False, "[PyTorch default] SGD Nesterov momentum (torch needs dampening 0 for it)")
    betas: list = param([0.9, 0.999], "[PyTorch default] AdamW betas (= [LG] adam_beta1, adam_beta2)")
    eps: float = param(1e-8, "[PyTorch default] AdamW epsilon", positive)


def _milestones(v: Any) -> str | None:
    return None if all(isinstance(m, int) and m > 0 for m in v) else "must be positive iterations"


@dataclass
class SchedConfig:
    """The ``sched`` section: learning-rate schedules stepped once per iteration."""

    name: str = param("multistep", "[LG] MultiStepLR; poly | multistep | onecycle", one_of("poly", "multistep", "onecycle"))
    milestones: list = param([18000, 22500], "[LG] epochs 120 and 150 of 400 at 150 iterations per epoch (multistep)", _milestones)
    gamma: float = param(0.3, "[LG] step_gamma: the factor at each milestone (multistep)", positive)
    power: float = param(0.9, "[LG] poly_power (poly)", positive)
    warmup_iters: int = param(0, "[LG] none: linear warmup iterations (poly, multistep)", non_negative)
    warmup_ratio: float = param(0.1, "[ours] warmup starts at this fraction of the lr (mmcv's warmup_ratio); used only with warmup_iters", in_range(0.0, 1.0 + 1e-9))
    pct_start: float = param(0.05, "[Pointcept] onecycle: share of the run spent warming up", in_range(0.0, 1.0))
    anneal_strategy: str = param("cos", "[Pointcept] onecycle: cos | linear", one_of("cos", "linear"))
    div_factor: float = param(10.0, "[Pointcept] onecycle: initial lr = max lr / div_factor", positive)
    final_div_factor: float = param(1000.0, "[Pointcept] onecycle: final lr = initial lr / final_div_factor", positive)
    max_lr: Optional[float] = param(None, "[ours] onecycle: peak lr; null: optim.lr, so one key sets the lr of every schedule", positive)
    cycle_momentum: bool = param(False, "[ours] onecycle: cycle the momentum; off so that optim.momentum holds (torch's default cycles it)")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg: Mapping[str, Any] | Any) -> Optimizer:
    """The optimizer an ``optim`` section (complete or partial) names, over the trainable params.

    Only parameters with ``requires_grad`` are optimized (CeCo's frozen maps are buffers anyway).
    """
    cfg = typed(OptimConfig, optim_cfg, "optim")
    validate_section(OptimConfig, cfg, "optim")
    kwargs = {k: cfg[k] for k in OPTIMIZER_KEYS[cfg.name]}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return OPTIMIZERS[cfg.name](trainable, **kwargs)


def warmup_factor(iteration: int, warmup_iters: int, warmup_ratio: float) -> float:
    """Linear warmup from ``warmup_ratio`` to 1 over the first ``warmup_iters`` iterations."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return 1.0
    return warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters


def _with_warmup(optimizer: Optimizer, main: Callable[[int], float], cfg: Any) -> LambdaLR:
    warmup_iters, warmup_ratio = int(cfg.warmup_iters), float(cfg.warmup_ratio)
    return LambdaLR(optimizer, lambda it: warmup_factor(it, warmup_iters, warmup_ratio) * main(it))


def _poly(optimizer: Optimizer, cfg: Any, total: int) -> LRScheduler:
    """lr · (1 − it/total)^power (PolyLR)."""
    power = float(cfg.power)
    return _with_warmup(optimizer, lambda it: max(0.0, 1.0 - it / total) ** power, cfg)


def _multistep(optimizer: Optimizer, cfg: Any, total: int) -> LRScheduler:
    """lr · gamma^(number of milestones passed); milestones are iterations."""
    milestones = sorted(int(m) for m in cfg.milestones)
    gamma = float(cfg.gamma)
    if any(m > total for m in milestones):
        raise ValueError(f"sched.milestones must lie in 1..{total} (train.iterations), got {milestones}")
    return _with_warmup(optimizer, lambda it: gamma ** sum(it >= m for m in milestones), cfg)


def _onecycle(optimizer: Optimizer, cfg: Any, total: int) -> LRScheduler:
    """torch's OneCycleLR; its warmup is ``pct_start`` (``warmup_iters`` is not used)."""
    if int(cfg.warmup_iters) > 0:
        raise ValueError("sched: onecycle warms up through pct_start; remove warmup_iters")
    max_lr = cfg.max_lr if cfg.max_lr is not None else [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total,
        pct_start=float(cfg.pct_start),
        anneal_strategy=str(cfg.anneal_strategy),
        div_factor=float(cfg.div_factor),
        final_div_factor=float(cfg.final_div_factor),
        cycle_momentum=bool(cfg.cycle_momentum),
    )


SCHEDULERS: dict[str, Callable[[Optimizer, Any, int], LRScheduler]] = {
    "poly": _poly,
    "multistep": _multistep,
    "onecycle": _onecycle,
}


def build_scheduler(optimizer: Optimizer, sched_cfg: Mapping[str, Any] | Any, total_iters: int) -> LRScheduler:
    """The schedule a ``sched`` section (complete or partial) names, stepped once per iteration."""
    cfg = typed(SchedConfig, sched_cfg, "sched")
    validate_section(SchedConfig, cfg, "sched")
    if total_iters <= 0 or not math.isfinite(total_iters):
        raise ValueError(f"build_scheduler: total_iters must be positive, got {total_iters}")
    return SCHEDULERS[cfg.name](optimizer, cfg, int(total_iters))


def current_lr(optimizer: Optimizer) -> float:
    """Learning rate of the first parameter group (the one logged)."""
    return float(optimizer.param_groups[0]["lr"])
