"""The study's decision rule (docs/study.md) applied to hand-made runs whose paired differences,
standard deviations and verdicts are worked out by hand below."""

from __future__ import annotations

import numpy as np
import pytest

from pointseg.analysis.study import Run, StudyResults, paired, report_markdown, verdict


def _run(arm: str, seed: int, head: float, tail: float, std_cos: float) -> Run:
    overall = {"equiangular_means": std_cos, "maxangle_means": 0.1, "nc1": 1.0}
    record = {
        "iteration": 800,
        "metrics": {"overall": overall, "num_classes_measured": 20, "classifier_cosine": None},
        "center_metrics": {"overall": {"equiangular_means": 0.2, "alignment": 0.5}},
    }
    metrics = {"miou": (head + tail) / 2, "head_miou": head, "common_miou": 0.8, "tail_miou": tail}
    return Run(arm, seed, metrics, [record], log=[])


def _results() -> StudyResults:
    ce = [_run("ce", s, 0.90, t, 0.30) for s, t in enumerate([0.20, 0.22, 0.24])]
    # tail − CE: +0.05, +0.06, +0.05 (mean 0.0533, SD 0.00577: gain > 2 SD); head: −0.005, 0,
    # −0.015 (mean −0.00667 ≥ −SD = −0.00764); Std-cos: −0.05, +0.01, −0.03 (mean < 0).
    helps = [_run("ceco", s, h, t, c) for s, h, t, c in
             [(0, 0.895, 0.25, 0.25), (1, 0.90, 0.28, 0.31), (2, 0.885, 0.29, 0.27)]]
    # tail − CE: +0.05, −0.03, +0.04 (mean 0.02, SD 0.0436: not above 2 SD); head unchanged.
    noisy = [_run("ceco_paper_eq4", s, 0.90, t, 0.28) for s, t in [(0, 0.25), (1, 0.19), (2, 0.28)]]
    helps.reverse()  # pairing goes by seed, not by position
    return StudyResults(runs={"ce": ce, "ceco": helps, "ceco_paper_eq4": noisy})


def test_paired_differences_go_seed_by_seed():
    r = _results()
    diffs = paired(r.runs["ceco"], r.runs["ce"], lambda run: run.metrics["tail_miou"])
    assert sorted(diffs.round(6).tolist()) == [0.05, 0.05, 0.06]


def test_verdict_follows_the_three_checks():
    r = _results()
    v = verdict(r, "ceco")
    assert v["tail"] == pytest.approx((0.16 / 3, np.std([0.05, 0.06, 0.05], ddof=1)))
    assert v["head"] == pytest.approx((-0.02 / 3, np.std([-0.005, 0.0, -0.015], ddof=1)))
    assert v["std_cos"][0] == pytest.approx(-0.07 / 3)
    assert v["checks"] == {"tail_gain": True, "head_kept": True, "std_cos_falls": True} and v["helps"]

    v = verdict(r, "ceco_paper_eq4")
    assert v["tail"] == pytest.approx((0.02, np.std([0.05, -0.03, 0.04], ddof=1)))
    assert v["checks"] == {"tail_gain": False, "head_kept": True, "std_cos_falls": True} and not v["helps"]


def test_report_rows_carry_the_verdicts():
    text = report_markdown(_results(), figures={}, pair=("toaster", "toaster oven"))
    verdicts = [line for line in text.splitlines() if line.startswith("| CE") and "**" in line]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in verdicts}
    assert rows["CE + CeCo (released head)"].endswith("**yes** |")
    assert rows["CE + CeCo (paper Eq. 4, no prior)"].endswith("**no** |")
    assert "| CE | 56.0 ± 1.0 | 90.0 ± 0.0 | 80.0 ± 0.0 | 22.0 ± 2.0 |" in text
    assert "K = 20 classes" in text
