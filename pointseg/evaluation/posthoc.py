"""Post-hoc corrections of a trained model's point logits at evaluation, for long-tailed training.

``LogitAdjust``: f_k − τ·log p_k with p_k the training class prior (Menon et al., "Long-tail
learning via logit adjustment", ICLR 2021, Eq. 9): the argmax of the adjusted logits estimates the
balanced-error Bayes classifier from a model trained with plain cross-entropy, at no training cost.
``TauNorm``: the τ-normalized classifier of Kang et al. ("Decoupling Representation and Classifier
for Long-Tailed Recognition", ICLR 2020): each class's row w_k of the point classifier becomes
w_k / ‖w_k‖^τ, undoing the larger norms that head classes grow. Kang et al.'s classifiers have no
bias; here the bias b_k is kept as it is, so τ = 0 is exactly the trained classifier.

Both act on the logits each model returns (``Posthoc`` wraps a model), before the softmax that
the fragments, views and ensemble members average (``pointseg.evaluation.inference.vote``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointseg.data.stats import COUNT_KINDS, STATS_FILE, class_prior, load_class_counts, read_stats
from pointseg.datasets import DatasetSpec
from pointseg.evaluation.inference import Model


class LogitAdjust:
    """``logits − τ·log p``; p (K,) a class prior (absent classes floored, ``data.stats.class_prior``)."""

    def __init__(self, prior: Sequence[float] | np.ndarray, tau: float, source: str | None = None) -> None:
        if not np.isfinite(tau):
            raise ValueError(f"--logit-adjust: tau must be a finite number, got {tau}")
        p = np.asarray(prior, dtype=np.float64)
        if p.ndim != 1 or not (p > 0).all():
            raise ValueError("--logit-adjust: the prior must be K positive probabilities")
        self.tau = float(tau)
        self.prior = p
        self.source = source
        self.offset = torch.as_tensor(self.tau * np.log(p), dtype=torch.float32)

    def __call__(self, logits: torch.Tensor, model: Any = None) -> torch.Tensor:
        if logits.shape[-1] != self.offset.numel():
            raise ValueError(f"--logit-adjust: the prior has {self.offset.numel()} classes, the model {logits.shape[-1]}")
        return logits - self.offset.to(logits.device, logits.dtype)


class TauNorm:
    """``w_k z + b_k`` → ``w_k z / ‖w_k‖^τ + b_k`` of a model's point classifier (its ``weight_matrix()``)."""

    def __init__(self, tau: float) -> None:
        if not np.isfinite(tau):
            raise ValueError(f"--tau-norm: tau must be a finite number, got {tau}")
        self.tau = float(tau)

    def scale(self, model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """1/‖w_k‖^τ (K,) and the bias (K,) or None of ``model.classifier``."""
        classifier = getattr(model, "classifier", None)
        if classifier is None or not hasattr(classifier, "weight_matrix"):
            raise ValueError("--tau-norm: the model has no point classifier with a weight_matrix()")
        with torch.no_grad():
            norms = classifier.weight_matrix().detach().float().norm(dim=1)
        if not bool((norms > 0).all()):
            raise ValueError("--tau-norm: a class of the point classifier has a zero weight row")
        bias = getattr(classifier, "bias", None)
        return norms.pow(-self.tau), None if bias is None else bias.detach()

    def __call__(self, logits: torch.Tensor, model: Any) -> torch.Tensor:
        s, b = self.scale(model)
        s = s.to(logits.device, logits.dtype)
        # (f − b)·s + b written as f·s + b·(1 − s): at τ = 0 it is f exactly (f·1 + b·0).
        return logits * s if b is None else logits * s + b.to(logits.device, logits.dtype) * (1 - s)


class Posthoc:
    """A model whose returned logits pass the given corrections in order (τ-norm before the prior)."""

    def __init__(self, model: Model, hooks: Sequence[Any]) -> None:
        self.model = model
        self.hooks = list(hooks)

    def __call__(self, batch: dict) -> dict:
        out = dict(self.model(batch))
        for hook in self.hooks:
            out["logits"] = hook(out["logits"], self.model)
        return out


def read_prior(
    num_classes: int,
    data_root: str | Path | None = None,
    stats_path: str | Path | None = None,
    by: str = "points",
    spec: DatasetSpec | None = None,
) -> tuple[np.ndarray, str]:
    """The training class prior p (K,) and where it came from: ``stats_path`` (a ``stats.json``),
    else the training split of ``data_root`` (the statistics file of ``spec``, default
    ScanNet200's ``stats.json``, or its labels counted)."""
    if by not in COUNT_KINDS:
        raise ValueError(f"--prior-by must be one of {list(COUNT_KINDS)}, got {by!r}")
    if stats_path is not None:
        path = Path(stats_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prior file not found")
        counts = read_stats(path, "train", num_classes)
        if counts is None:
            raise ValueError(f"{path}: no per-class counts of the train split (splits.train.class_point_counts / class_scene_counts)")
    elif data_root is not None:
        try:
            counts = load_class_counts(data_root, "train", num_classes, spec=spec)
        except FileNotFoundError as e:
            raise ValueError(f"{data_root}: no {STATS_FILE} with class counts and no training scenes ({e}); give --prior PATH") from e
    else:
        raise ValueError("--logit-adjust needs a prior: the config's data.root, or --prior PATH to a stats.json")
    return class_prior(counts, by), f"{counts.source} (train {by})"


def posthoc_models(
    models: Sequence[Model],
    logit_adjust: LogitAdjust | None = None,
    tau_norm: TauNorm | None = None,
) -> tuple[list[Model], dict[str, Any]]:
    """The models with the corrections applied, and their record for ``metrics.json``."""
    hooks = [h for h in (tau_norm, logit_adjust) if h is not None]
    record: dict[str, Any] = {}
    if tau_norm is not None:
        record["tau_norm"] = {"tau": tau_norm.tau}
    if logit_adjust is not None:
        record["logit_adjust"] = {
            "tau": logit_adjust.tau, "prior_source": logit_adjust.source, "prior": logit_adjust.prior.tolist()
        }
    return ([Posthoc(m, hooks) for m in models] if hooks else list(models)), record


__all__ = ["LogitAdjust", "Posthoc", "TauNorm", "posthoc_models", "read_prior"]
