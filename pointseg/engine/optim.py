"""Optimizers and per-iteration learning-rate schedules named in the config (``optim``, ``sched``).

Schedules are stepped once per optimizer step (iteration), never per epoch, so a run's length
is ``train.iterations`` whatever the dataset size.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

# Defaults of the language-grounded ScanNet200 baseline (SGD) and torch's AdamW, used for keys
# the config leaves out.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4},
    "AdamW": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01},
}

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "SGD": torch.optim.SGD,
    "AdamW": torch.optim.AdamW,
}


def _plain(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(cfg)


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg: Mapping[str, Any]) -> Optimizer:
    """``optim_cfg`` = ``{name: SGD|AdamW, lr, ...}``: the other keys go to the torch constructor.

    Only parameters with ``requires_grad`` are optimized (CeCo's frozen projection is not).
    """
    cfg = _plain(optim_cfg)
    name = cfg.pop("name", None)
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    kwargs = {**OPTIMIZER_DEFAULTS[name], **cfg}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    try:
        return OPTIMIZERS[name](trainable, **kwargs)
    except TypeError as e:
        raise ValueError(f"optim: bad option for {name} ({e})") from e


def warmup_factor(iteration: int, warmup_iters: int, warmup_ratio: float) -> float:
    """Linear warmup from ``warmup_ratio`` to 1 over the first ``warmup_iters`` iterations."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return 1.0
    return warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters


def _with_warmup(
    optimizer: Optimizer, main: Callable[[int], float], cfg: Mapping[str, Any]
) -> LambdaLR:
    warmup_iters = int(cfg.get("warmup_iters", 0))
    warmup_ratio = float(cfg.get("warmup_ratio", 0.1))
    return LambdaLR(optimizer, lambda it: warmup_factor(it, warmup_iters, warmup_ratio) * main(it))


def _poly(optimizer: Optimizer, cfg: Mapping[str, Any], total: int) -> LRScheduler:
    """lr · (1 − it/total)^power, the ScanNet200 baseline's PolyLR (power 0.9)."""
    power = float(cfg.get("power", 0.9))
    return _with_warmup(optimizer, lambda it: max(0.0, 1.0 - it / total) ** power, cfg)


def _multistep(optimizer: Optimizer, cfg: Mapping[str, Any], total: int) -> LRScheduler:
    """lr · gamma^(number of milestones passed); milestones are iterations."""
    milestones = sorted(int(m) for m in cfg.get("milestones", []))
    gamma = float(cfg.get("gamma", 0.1))
    if any(m <= 0 or m > total for m in milestones):
        raise ValueError(f"sched.milestones must lie in 1..{total} (train.iterations), got {milestones}")
    return _with_warmup(optimizer, lambda it: gamma ** sum(it >= m for m in milestones), cfg)


def _onecycle(optimizer: Optimizer, cfg: Mapping[str, Any], total: int) -> LRScheduler:
    """torch's OneCycleLR; its warmup is ``pct_start`` (``warmup_iters`` is not used).

    Defaults follow Pointcept's sparse-UNet recipes (pct_start 0.05, div 10, final div 1000, no
    momentum cycling, which would override the configured SGD momentum).
    """
    if int(cfg.get("warmup_iters", 0)) > 0:
        raise ValueError("sched: onecycle warms up through pct_start; remove warmup_iters")
    max_lr = cfg.get("max_lr") or [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total,
        pct_start=float(cfg.get("pct_start", 0.05)),
        anneal_strategy=str(cfg.get("anneal_strategy", "cos")),
        div_factor=float(cfg.get("div_factor", 10.0)),
        final_div_factor=float(cfg.get("final_div_factor", 1000.0)),
        cycle_momentum=bool(cfg.get("cycle_momentum", False)),
    )


SCHEDULERS: dict[str, Callable[[Optimizer, Mapping[str, Any], int], LRScheduler]] = {
    "poly": _poly,
    "multistep": _multistep,
    "onecycle": _onecycle,
}


def build_scheduler(optimizer: Optimizer, sched_cfg: Mapping[str, Any], total_iters: int) -> LRScheduler:
    """``sched_cfg`` = ``{name: poly|multistep|onecycle, ...}``, stepped once per iteration."""
    cfg = _plain(sched_cfg)
    name = cfg.pop("name", None)
    if name not in SCHEDULERS:
        raise ValueError(f"sched.name: unknown scheduler {name!r}; known: {sorted(SCHEDULERS)}")
    if total_iters <= 0 or not math.isfinite(total_iters):
        raise ValueError(f"build_scheduler: total_iters must be positive, got {total_iters}")
    return SCHEDULERS[name](optimizer, cfg, int(total_iters))


def current_lr(optimizer: Optimizer) -> float:
    """Learning rate of the first parameter group (the one logged)."""
    return float(optimizer.param_groups[0]["lr"])
