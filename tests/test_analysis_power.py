"""The study's power analysis against simulation and scipy's own t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pointseg.analysis.power import minimum_detectable_effect, paired_t_power, paired_t_test, seeds_for_power


@pytest.mark.parametrize("delta, sd, n", [(4.6, 4.0, 6), (2.0, 3.0, 10), (1.0, 1.0, 3)])
def test_power_matches_a_simulated_paired_t_test(delta, sd, n):
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    simulated = float((t > stats.t.ppf(0.95, n - 1)).mean())
    assert abs(paired_t_power(delta, sd, n) - simulated) < 0.01


def test_seeds_and_minimum_detectable_effect_invert_each_other():
    n = seeds_for_power(4.6, 4.0)
    assert paired_t_power(4.6, 4.0, n) >= 0.8 > paired_t_power(4.6, 4.0, n - 1)
    mde = minimum_detectable_effect(4.0, n)
    assert mde <= 4.6 and abs(paired_t_power(mde, 4.0, n) - 0.8) < 1e-6
    assert minimum_detectable_effect(4.0, n + 4) < mde  # more seeds see smaller effects


def test_paired_t_test_agrees_with_scipy():
    diffs = [3.1, -0.4, 5.2, 2.2, 1.0]
    ours = paired_t_test(diffs)
    ref = stats.ttest_1samp(diffs, 0.0, alternative="greater")
    assert ours["t"] == pytest.approx(ref.statistic) and ours["p"] == pytest.approx(ref.pvalue)
    assert ours["significant"] == (ref.pvalue < 0.05)
    # the one-sided 95 % upper bound is the end of scipy's "less" interval
    bound = stats.ttest_1samp(diffs, 0.0, alternative="less").confidence_interval(0.95)
    assert bound.low == -math.inf and ours["upper"] == pytest.approx(bound.high)
