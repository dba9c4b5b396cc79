"""Neural-collapse statistics of last-layer features, streamed in bounded memory.

The CeCo paper (§3.1, Figures 2 and 4) follows Papyan et al. (2020): with μ_G the global mean of
all features, ẑ_k the normalized centered class means (μ_k − μ_G) and ŵ_k the normalized
classifier rows, a simplex ETF of K classes has

* equiangularity    ``Std_{k≠k'} cos(ẑ_k, ẑ_k') = 0`` and
* maximal angle     ``Avg_{k≠k'} |cos(ẑ_k, ẑ_k') + 1/(K−1)| = 0``,

and NC1 ``Tr(Σ_W Σ_B⁺) / K`` measures within-class spread relative to between-class spread. K is
the number of classes measured (those with at least one point); the output states it and the
shift 1/(K−1) it implies.

``weighting="point"`` (the default) is the paper's definition: μ_G is the mean over all points and
Σ_W is pooled over points. Segmentation data is heavily imbalanced, so these are dominated by a few
head classes and even class means arranged exactly as a simplex ETF would look skewed;
``weighting="class"`` takes μ_G as the mean of the class means and Σ_W as the mean of the per-class
covariances instead. On balanced data both coincide.

:func:`center_space_metrics` measures the same angles in the space CeCo regularizes: the class
centers passed through the center branch's frozen maps into the normalized embedding that the
ETF classifies.

Only per-class counts, means and scatter matrices are kept (K·D² numbers; 200·96² doubles is
15 MB), merged chunk by chunk with Chan et al.'s parallel update, which stays accurate in float64
where ``Σxxᵀ − nμμᵀ`` would cancel.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from pointseg.meta import IGNORE_INDEX

METRIC_NAMES = (
    "equiangular_means",
    "maxangle_means",
    "equiangular_classifier",
    "maxangle_classifier",
    "nc1",
)
WEIGHTINGS = ("class", "point")


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class CollapseAccumulator:
    """Streaming per-class count, mean and scatter (Σ (x−μ_k)(x−μ_k)ᵀ) of features.

    mmdet3d-style: call :meth:`process` on every chunk (a batch of voxels), then
    :meth:`evaluate` once. Accumulators of different workers combine with :meth:`merge`.
    """

    def __init__(self, num_classes: int, feature_dim: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 2 or feature_dim < 1:
            raise ValueError(f"need num_classes ≥ 2 and feature_dim ≥ 1, got {num_classes}, {feature_dim}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        k, d = self.num_classes, self.feature_dim
        self.count = np.zeros(k, dtype=np.int64)
        self.mean = np.zeros((k, d), dtype=np.float64)
        self.scatter = np.zeros((k, d, d), dtype=np.float64)

    # ------------------------------------------------------------------ accumulation
    def process(self, feat: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a chunk: ``feat`` (N, D) and ``labels`` (N,) class index or ``ignore_index``."""
        x = _as_numpy(feat).astype(np.float64, copy=False)
        y = _as_numpy(labels).astype(np.int64, copy=False).reshape(-1)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"feat must be (N, {self.feature_dim}), got {tuple(x.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"labels have {y.shape[0]} entries for {x.shape[0]} feature rows")
        keep = y != self.ignore_index
        x, y = x[keep], y[keep]
        if y.size == 0:
            return
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1} or {self.ignore_index}")
        # Sort once so each class is a contiguous slice: one (n_k × D)ᵀ(n_k × D) product per class.
        order = np.argsort(y, kind="stable")
        x, y = x[order], y[order]
        classes, starts, counts = np.unique(y, return_index=True, return_counts=True)
        for k, s, n in zip(classes.tolist(), starts.tolist(), counts.tolist()):
            xk = x[s : s + n]
            mean_b = xk.mean(axis=0)
            xc = xk - mean_b
            self._combine(k, n, mean_b, xc.T @ xc)

    def _combine(self, k: int, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        """Chan et al. parallel update of class ``k`` with a block of ``n_b`` rows."""
        n_a = int(self.count[k])
        n = n_a + n_b
        delta = mean_b - self.mean[k]
        self.mean[k] += delta * (n_b / n)
        self.scatter[k] += scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count[k] = n

    def merge(self, other: "CollapseAccumulator") -> None:
        """Fold another accumulator (same K and D) into this one."""
        if (other.num_classes, other.feature_dim) != (self.num_classes, self.feature_dim):
            raise ValueError("cannot merge accumulators of different shapes")
        for k in np.flatnonzero(other.count).tolist():
            self._combine(k, int(other.count[k]), other.mean[k], other.scatter[k])

    # ------------------------------------------------------------------ statistics
    @property
    def present(self) -> np.ndarray:
        """Boolean (K,) mask of the classes seen at least once."""
        return self.count > 0

    def global_mean(self, weighting: str = "point") -> np.ndarray:
        """μ_G: the mean of the present class means (``class``) or of all points (``point``)."""
        _check_weighting(weighting)
        p = self.present
        if not p.any():
            raise ValueError("no labelled features were processed")
        if weighting == "class":
            return self.mean[p].mean(axis=0)
        return (self.count[p, None] * self.mean[p]).sum(axis=0) / self.count[p].sum()

    def within_class_cov(self, classes: np.ndarray, weighting: str = "point") -> np.ndarray:
        """Σ_W over ``classes`` (indices): mean class covariance, or pooled over points."""
        _check_weighting(weighting)
        if weighting == "class":
            return (self.scatter[classes] / self.count[classes, None, None]).mean(axis=0)
        return self.scatter[classes].sum(axis=0) / self.count[classes].sum()

    def total_cov(self) -> np.ndarray:
        """Covariance of all labelled points (pooled): Σ_W + Σ_B with point weights, (D, D)."""
        p = np.flatnonzero(self.present)
        n = self.count[p].sum()
        mu = self.global_mean("point")
        dev = self.mean[p] - mu
        return (self.scatter[p].sum(axis=0) + (self.count[p, None] * dev).T @ dev) / n

    # ------------------------------------------------------------------ metrics
    def evaluate(
        self,
        classifier_weight: torch.Tensor | np.ndarray | None = None,
        groups: Mapping[str, np.ndarray] | None = None,
        weighting: str = "point",
    ) -> dict:
        """Collapse metrics over the present classes, overall and per group.

        ``classifier_weight`` (K, D) are the classifier rows w_k (``None``: classifier metrics are
        ``None``). ``groups`` maps a name (``head`` / ``common`` / ``tail``) to a boolean (K,) mask;
        a group's angle metrics use the pairs of present classes inside it, with the overall
        1/(K−1) of the K present classes, and its NC1 uses its own Σ_W, Σ_B (around the overall
        μ_G). A group with fewer than two present classes gets ``None`` metrics.
        """
        present = np.flatnonzero(self.present)
        if present.size < 2:
            raise ValueError(f"need at least two classes with features, found {present.size}")
        mu_g = self.global_mean(weighting)
        centered = self.mean[present] - mu_g
        z_hat = _normalize_rows(centered)
        w_hat = None
        if classifier_weight is not None:
            w = _as_numpy(classifier_weight).astype(np.float64)
            if w.shape != (self.num_classes, self.feature_dim):
                raise ValueError(
                    f"classifier_weight must be ({self.num_classes}, {self.feature_dim}), got {w.shape}"
                )
            w_hat = _normalize_rows(w[present])
        k_total = present.size
        cos_z = z_hat @ z_hat.T
        cos_w = None if w_hat is None else w_hat @ w_hat.T

        def group_metrics(sel: np.ndarray) -> dict:
            """Metrics over the positions ``sel`` (into ``present``)."""
            out: dict = {"num_classes": int(sel.size), "num_points": int(self.count[present[sel]].sum())}
            if sel.size < 2:
                return out | {m: None for m in METRIC_NAMES}
            out["equiangular_means"], out["maxangle_means"] = _angle_metrics(cos_z[np.ix_(sel, sel)], k_total)
            if cos_w is None:
                out["equiangular_classifier"] = out["maxangle_classifier"] = None
            else:
                out["equiangular_classifier"], out["maxangle_classifier"] = _angle_metrics(
                    cos_w[np.ix_(sel, sel)], k_total
                )
            sigma_w = self.within_class_cov(present[sel], weighting)
            sigma_b = centered[sel].T @ centered[sel] / sel.size
            out["nc1"] = nc1(sigma_w, sigma_b, sel.size)
            return out

        result: dict = {
            "weighting": weighting,
            "num_classes_measured": int(k_total),
            "etf_cosine": -1.0 / (k_total - 1),  # the shift: every pair of a simplex ETF of K classes
            "classes": present.tolist(),
            "overall": group_metrics(np.arange(k_total)),
        }
        selections = {"overall": np.arange(k_total)}
        for name, mask in (groups or {}).items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.num_classes,):
                raise ValueError(f"group {name!r}: mask must have shape ({self.num_classes},)")
            selections[name] = np.flatnonzero(mask[present])
            result[name] = group_metrics(selections[name])
        if w_hat is not None:
            rows = _as_numpy(classifier_weight).astype(np.float64)[present]
            result["classifier_cosine"] = {
                "raw": {g: mean_pairwise_cosine(rows, sel) for g, sel in selections.items()},
                "centered": {g: mean_pairwise_cosine(rows - rows.mean(axis=0), sel) for g, sel in selections.items()},
            }
        return result


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float64).tiny)


def mean_pairwise_cosine(rows: np.ndarray, sel: np.ndarray) -> float | None:
    """Mean cosine over the pairs of ``rows[sel]`` (None with fewer than two rows).

    For classifier rows, minority collapse shows as tail rows closer to each other than a simplex
    ETF's −1/(K−1). Rows learned under a softmax share a common component (adding a vector to
    every row changes no prediction), which hides it; ``evaluate`` therefore also reports the rows
    centered on their mean over the measured classes.
    """
    if len(sel) < 2:
        return None
    r = _normalize_rows(rows[sel])
    cos = r @ r.T
    return float(cos[~np.eye(len(sel), dtype=bool)].mean())


def _angle_metrics(cos: np.ndarray, k_total: int) -> tuple[float, float]:
    """(Std, Avg |cos + 1/(K−1)|) of the off-diagonal entries of a cosine matrix."""
    off = cos[~np.eye(cos.shape[0], dtype=bool)]
    return float(off.std()), float(np.abs(off + 1.0 / (k_total - 1)).mean())


def nc1(sigma_w: np.ndarray, sigma_b: np.ndarray, num_classes: int, rtol: float = 1e-10) -> float:
    """Papyan's NC1 = Tr(Σ_W Σ_B⁺) / K.

    Σ_B has rank ≤ K−1 < D in general; the pseudo-inverse drops eigenvalues below ``rtol`` times
    the largest, which in float64 separates the true null space from round-off.
    """
    pinv = np.linalg.pinv(sigma_b, rtol=rtol, hermitian=True)
    return float(np.trace(sigma_w @ pinv) / num_classes)



def center_space_metrics(
    acc: CollapseAccumulator,
    point_embedding: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    center_embedding: Callable[[np.ndarray], np.ndarray],
    classifier: np.ndarray,
    groups: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Angle metrics of the class centers in the space CeCo regularizes.

    The centers over the split, μ_k, are mapped as the center branch maps a batch's centers:
    ``point_embedding(means, total_cov)`` (the reduce + BatchNorm, which is linear per point, so the
    mean of the standardized points is the standardized mean; ``None`` when the head pools the
    features themselves) then ``center_embedding`` (projection + L2 normalization). The loss pulls
    each embedding e_k towards its classifier column w_k, whose pairwise cosines are −1/(K−1)
    about the origin, with K the classifier's column count (the branch's classes, e.g. 200, even
    when fewer are present), so the cosines are taken as they are, not around a global mean. Besides
    the angle metrics of {e_k} and of the classifier columns, ``alignment`` is the mean
    cos(e_k, w_k). NC1 is ``None``: the embedding of a class mean is not the mean of embeddings.
    """
    present = np.flatnonzero(acc.present)
    if present.size < 2:
        raise ValueError(f"need at least two classes with features, found {present.size}")
    means = acc.mean[present]
    pooled = means if point_embedding is None else point_embedding(means, acc.total_cov())
    e_hat = _normalize_rows(np.asarray(center_embedding(pooled), dtype=np.float64))
    w_hat = _normalize_rows(np.asarray(classifier, dtype=np.float64).T[present])
    cos_e, cos_w = e_hat @ e_hat.T, w_hat @ w_hat.T
    align = np.sum(e_hat * w_hat, axis=1)
    k_etf = int(np.asarray(classifier).shape[1])  # the target angle is set by the ETF's K

    def group_metrics(sel: np.ndarray) -> dict:
        out: dict = {"num_classes": int(sel.size), "num_points": int(acc.count[present[sel]].sum())}
        if sel.size < 2:
            return out | {m: None for m in METRIC_NAMES} | {"alignment": None}
        out["equiangular_means"], out["maxangle_means"] = _angle_metrics(cos_e[np.ix_(sel, sel)], k_etf)
        out["equiangular_classifier"], out["maxangle_classifier"] = _angle_metrics(cos_w[np.ix_(sel, sel)], k_etf)
        out["nc1"] = None
        out["alignment"] = float(align[sel].mean())
        return out

    result: dict = {
        "space": "center embedding",
        "num_classes_measured": int(present.size),
        "num_classes_etf": k_etf,
        "etf_cosine": -1.0 / (k_etf - 1),
        "classes": present.tolist(),
        "overall": group_metrics(np.arange(present.size)),
    }
    for name, mask in (groups or {}).items():
        result[name] = group_metrics(np.flatnonzero(np.asarray(mask, dtype=bool)[present]))
    return result
