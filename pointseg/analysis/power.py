"""Power of the study's paired test: how many seeds see an effect, and the smallest one they see.

The decision rule of ``docs/study.md`` tests the paired differences (arm − CE, seed by seed) with
a one-sided paired t-test at level ``alpha``. With n seeds and a true mean difference δ whose
seed-to-seed standard deviation is σ, the statistic ``mean / (sd / sqrt(n))`` follows a
noncentral t with n − 1 degrees of freedom and noncentrality ``δ sqrt(n) / σ``; the power is the
chance that it exceeds the t quantile ``t_{1−alpha, n−1}`` (scipy's ``nct`` gives it exactly,
so no normal approximation is needed for the small n of a CPU study).
"""

from __future__ import annotations

import math

from scipy import optimize, stats


def paired_t_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Chance that a one-sided paired t-test at ``alpha`` over ``n`` pairs rejects "no gain"
    when the true mean difference is ``delta`` and the paired SD is ``sd``."""
    if n < 2:
        return float("nan")
    if sd <= 0:
        return 1.0 if delta > 0 else float(alpha)
    df = n - 1
    crit = stats.t.ppf(1 - alpha, df)
    return float(stats.nct.sf(crit, df, delta * math.sqrt(n) / sd))


def seeds_for_power(delta: float, sd: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 1000) -> int:
    """Smallest number of paired seeds whose test reaches ``power`` at ``delta``."""
    for n in range(2, max_n + 1):
        if paired_t_power(delta, sd, n, alpha) >= power:
            return n
    raise ValueError(f"more than {max_n} seeds needed to see {delta} at SD {sd}")


def minimum_detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The mean difference that ``n`` paired seeds detect with ``power`` (same units as ``sd``)."""
    if n < 2 or sd <= 0:
        return float("nan") if n < 2 else 0.0
    return float(optimize.brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 1e-9 * sd, 100 * sd))


def paired_t_test(differences: list[float] | tuple[float, ...], alpha: float = 0.05) -> dict[str, float | bool]:
    """One-sided paired t-test of "mean difference > 0": mean, SD, SE, t, p and the verdict.

    ``upper`` is the one-sided ``1 − alpha`` upper confidence bound of the mean difference: the
    largest true gain the seeds leave plausible, which is what a test that finds no gain can still
    say about the size of one.
    """
    n = len(differences)
    if n < 2:
        return {"n": n, "mean": float("nan"), "sd": float("nan"), "se": float("nan"), "t": float("nan"),
                "p": float("nan"), "upper": float("nan"), "significant": False}
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    se = sd / math.sqrt(n)
    t = mean / se if se > 0 else (math.inf if mean > 0 else -math.inf if mean < 0 else 0.0)
    p = float(stats.t.sf(t, n - 1))
    upper = mean + float(stats.t.ppf(1 - alpha, n - 1)) * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "t": t, "p": p, "upper": upper, "significant": bool(p < alpha)}
