"""Class weights and log class priors of the long-tail losses, from a config value and the run's
training class counts (``pointseg.data.stats``: :func:`class_weights`, :func:`class_prior`).

A config names a scheme (``class_weight: effective_number``) or a prior (``prior: points``) instead
of typing K numbers; ``build_criteria`` hands the losses that need them the counts of the training
split, read from ``DATA/stats.json`` only when some loss asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pointseg.data.stats import COUNT_KINDS, WEIGHT_SCHEMES, ClassCounts, class_prior, class_weights


def _needs_counts(where: str, value: str) -> ValueError:
    return ValueError(f"{where}={value} needs the class counts of the training split (data.root's stats.json)")


def resolve_class_weight(
    spec: str | Sequence[float] | None,
    beta: float,
    by: str,
    class_counts: ClassCounts | None,
    where: str,
) -> torch.Tensor | None:
    """float32 (K,) class weights: a scheme of ``pointseg.data.stats.WEIGHT_SCHEMES`` computed from
    ``class_counts`` (``by`` points or scenes, ``beta`` for the effective number), K given numbers,
    or None (unweighted)."""
    if by not in COUNT_KINDS:
        raise ValueError(f"{where.rsplit('.', 1)[0]}.weight_by must be one of {list(COUNT_KINDS)}, got {by!r}")
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"{where.rsplit('.', 1)[0]}.beta must be in [0, 1), got {beta}")
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in WEIGHT_SCHEMES:
            raise ValueError(f"{where}: unknown scheme {spec!r}; expected one of {list(WEIGHT_SCHEMES)} or a list of K weights")
        if class_counts is None:
            raise _needs_counts(where, spec)
        return torch.as_tensor(class_weights(class_counts, spec, float(beta), by), dtype=torch.float32)
    return torch.as_tensor(list(spec), dtype=torch.float32)


def resolve_log_prior(spec: str | Sequence[float], class_counts: ClassCounts | None, where: str) -> torch.Tensor:
    """float32 (K,) log p_k: of the training ``points`` or ``scenes`` counts, or of K given counts
    (or probabilities). Absent classes count as the rarest present one (``class_prior``)."""
    if isinstance(spec, str):
        if spec not in COUNT_KINDS:
            raise ValueError(f"{where}: must be one of {list(COUNT_KINDS)} or a list of K class counts, got {spec!r}")
        if class_counts is None:
            raise _needs_counts(where, spec)
        p = class_prior(class_counts, by=spec)
    else:
        try:
            p = class_prior(list(spec))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return torch.log(torch.as_tensor(p, dtype=torch.float64)).float()


__all__ = ["resolve_class_weight", "resolve_log_prior"]
