"""Extension points of the training loop: a callback sees each step, each validation and each save.

The :class:`~pointseg.engine.trainer.Trainer` calls, in the order of its ``callbacks`` list:

- ``after_step(trainer, step)`` after every optimizer step (:class:`Step`: iteration, lr, the
  step's mean loss terms, wall seconds, threads), on every process;
- ``after_validation(trainer, iteration, metrics)`` after a validation that succeeded;
- ``before_save(trainer, iteration, names, stage)`` before checkpoints are written: it may add
  file names to ``names`` (``stage`` is ``"step"`` for the save after a step, ``"validation"`` for
  the one after a validation).

What the loop itself does not decide lives here: the run log (:class:`RunLog`), ``best.pth``
(:class:`BestCheckpoint`) and the ``iter_<it>.pth`` snapshots (:class:`Snapshots`). A new one
(an EMA of the weights, a refresh of a class prior) subclasses :class:`Callback` and goes into
``Trainer(callbacks=...)``; none may draw from the global RNGs, which the run's results depend on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from pointseg.engine.logger import memory_mb

if TYPE_CHECKING:
    from pointseg.engine.trainer import Trainer

LAST = "last.pth"
BEST = "best.pth"


def snapshot_name(iteration: int) -> str:
    """File name of the kept checkpoint of one iteration (sorts by iteration)."""
    return f"iter_{iteration:07d}.pth"


@dataclass(frozen=True)
class Step:
    """What one optimizer step did."""

    iteration: int
    lr: float
    losses: dict[str, torch.Tensor]  # mean loss terms, detached, on the device
    seconds: float
    threads: int


class Callback:
    """Hooks of the training loop; each does nothing unless overridden."""

    def after_step(self, trainer: "Trainer", step: Step) -> None:
        pass

    def after_validation(self, trainer: "Trainer", iteration: int, metrics: dict[str, Any]) -> None:
        pass

    def before_save(self, trainer: "Trainer", iteration: int, names: list[str], stage: str) -> None:
        pass


class RunLog(Callback):
    """``log.jsonl`` / TensorBoard / console records of the loss terms every ``train.log_every``
    iterations (and at the last), the progress bar, and ``val.jsonl``."""

    def __init__(self, log_every: int) -> None:
        self.log_every = int(log_every)
        self.last_losses: dict[str, float] = {}

    def after_step(self, trainer: "Trainer", step: Step) -> None:
        it = step.iteration
        if it % self.log_every == 0 or it == trainer.total:
            self.last_losses = trainer.reduce_losses(step.losses)  # a collective: every process
            extra = {"time": step.seconds, "memory_mb": memory_mb(trainer.device), "threads": step.threads}
            trainer.logger.log_train(it, step.lr, self.last_losses, extra)
        trainer.logger.step()

    def after_validation(self, trainer: "Trainer", iteration: int, metrics: dict[str, Any]) -> None:
        trainer.logger.log_val(iteration, metrics)


class BestCheckpoint(Callback):
    """Keep ``best.pth`` at the best validation mIoU (``trainer.best_miou``, saved in every
    checkpoint); ``last.pth`` is rewritten with it so that it never holds a stale best."""

    def __init__(self) -> None:
        self._improved = False

    def after_validation(self, trainer: "Trainer", iteration: int, metrics: dict[str, Any]) -> None:
        miou = float(metrics.get("miou", float("nan")))
        self._improved = math.isfinite(miou) and miou > trainer.best_miou
        if self._improved:
            trainer.best_miou = miou

    def before_save(self, trainer: "Trainer", iteration: int, names: list[str], stage: str) -> None:
        if stage == "validation" and self._improved:
            names[:] = [LAST, BEST] + [n for n in names if n not in (LAST, BEST)]
            self._improved = False


class Snapshots(Callback):
    """Also keep ``checkpoints/iter_<it>.pth`` every ``train.snapshot_every`` iterations."""

    def __init__(self, every: int) -> None:
        self.every = int(every)

    def before_save(self, trainer: "Trainer", iteration: int, names: list[str], stage: str) -> None:
        if stage == "step" and self.every > 0 and iteration % self.every == 0:
            names.append(snapshot_name(iteration))


__all__ = ["BEST", "LAST", "BestCheckpoint", "Callback", "RunLog", "Snapshots", "Step", "snapshot_name"]
