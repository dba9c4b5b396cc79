"""The second study's pilot reading and decision rule, on hand-made run summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from pointseg.analysis import study_v2
from pointseg.analysis.study_v2 import DESIGN, decide, last_third_gain, load_summaries, pilot_summary
from pointseg.analysis.study_v2_report import BEGIN, END, write_report


def summary(arm, seed, tail, head=90.0, std_cos=0.3, curve_tail=(20.0, 30.0, 31.0)):
    curve = [{"iteration": it, "head": head, "common": 60.0, "tail": t} for it, t in zip((1000, 2000, 3000), curve_tail)]
    return {"arm": arm, "seed": seed, "commit": "x", "minutes": 1.0, "curve": curve, "loss_ceco": [],
            "val": {"miou": 50.0, "head": head, "common": 60.0, "tail": tail, "per_class": {}},
            "collapse": {"equiangular_means": std_cos, "tail_equiangular_means": None}}


def write(folder, records):
    for r in records:
        (folder / f"{r['arm']}_seed{r['seed']}.json").write_text(json.dumps(r))


def test_last_third_gain_compares_the_end_with_two_thirds_of_it():
    curve = [{"iteration": it, "tail": t} for it, t in [(250, 5.0), (1000, 20.0), (2000, 30.0), (2250, 31.0), (3000, 31.5)]]
    assert last_third_gain(curve) == pytest.approx(1.5)  # 3000 against 2000
    assert last_third_gain(curve[:1]) != last_third_gain(curve[:1])  # NaN: one point is no curve


def test_pilot_reading_and_seed_count(tmp_path):
    ce_tail, ceco_tail = [30.0, 34.0, 29.0], [33.0, 35.5, 34.0]
    write(tmp_path, [summary("ce", s, t) for s, t in enumerate(ce_tail)])
    write(tmp_path, [summary("ceco", s, t) for s, t in enumerate(ceco_tail)])
    pilot = pilot_summary(load_summaries(tmp_path))
    diffs = [b - a for a, b in zip(ce_tail, ceco_tail)]  # 3, 1.5, 5
    assert pilot["paired_tail_differences"] == pytest.approx(diffs)
    assert pilot["converged"]  # every CE curve gains 1 point over its last third
    sd = stats.tstd(diffs)
    assert pilot["paired_tail_sd"] == pytest.approx(sd)
    assert pilot["seeds"] == max(3, pilot["seeds_needed"]) and pilot["minimum_detectable_effect"] <= 4.6
    # The study's later seeds of the same arms leave the pilot's reading as it was.
    write(tmp_path, [summary("ce", 3, 30.0, curve_tail=(10.0, 20.0, 30.0)), summary("ceco", 3, 10.0)])
    assert pilot_summary(load_summaries(tmp_path)) == pilot


def test_rule_needs_a_positive_control_before_it_judges_ceco(tmp_path):
    ce = [30.0, 32.0, 28.0, 31.0]
    records = [summary("ce", s, t) for s, t in enumerate(ce)]
    records += [summary("ceco", s, t + d, std_cos=0.25) for s, (t, d) in enumerate(zip(ce, [0.5, -1.0, 1.0, 0.0]))]
    records += [summary("balanced_softmax", s, t + d, head=89.5) for s, (t, d) in enumerate(zip(ce, [6.0, 5.0, 7.5, 6.5]))]
    write(tmp_path, records)
    out = decide(load_summaries(tmp_path))
    bs = out["comparisons"]["balanced_softmax"]
    ref = stats.ttest_1samp([6.0, 5.0, 7.5, 6.5], 0.0, alternative="greater")
    assert bs["tail"]["p"] == pytest.approx(ref.pvalue) and bs["passes"]
    ceco = out["comparisons"]["ceco"]
    assert not ceco["checks"]["tail_gain"] and ceco["checks"]["std_cos_falls"]
    assert out["sensitive"] and out["verdict"].startswith("CeCo does not help")
    # Without the positive control the same CeCo runs say nothing about CeCo.
    for s in range(4):
        (tmp_path / f"balanced_softmax_seed{s}.json").unlink()
    assert decide(load_summaries(tmp_path))["verdict"].startswith("benchmark could not register")


def test_report_block_is_replaced_and_the_rest_kept(tmp_path):
    write(tmp_path, [summary("ce", s, 30.0 + s) for s in range(3)] + [summary("ceco", s, 31.0 + 2 * s) for s in range(3)])
    runs = load_summaries(tmp_path)
    pilot, decision = pilot_summary(runs), decide(runs)
    doc = tmp_path / "study.md"
    doc.write_text("# Study\n\nkept text\n")
    write_report(runs, pilot, decision, doc, 12.0)
    write_report(runs, pilot, decision, doc, 13.0)
    text = doc.read_text()
    assert text.startswith("# Study\n\nkept text\n") and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "13 min of wall time in all" in text and f"+{DESIGN['target_gain']}" in text
    # CeCo − CE is 1, 2, 3: its row carries the one-sided 95 % upper bound of the mean gain
    upper = stats.ttest_1samp([1.0, 2.0, 3.0], 0.0, alternative="less").confidence_interval(0.95).high
    row = next(line for line in text.splitlines() if line.startswith("| CE + CeCo") and " − CE |" in line)
    assert "| +2.0 ± 1.0 |" in row and f"| {upper:+.1f} |" in row


def test_run_summary_reads_every_file_of_a_run(tmp_path):
    """A run folder written by hand: metrics, the curve, the L_CR series and the collapse record
    (backbone, own center space and the shared one) reach the committed summary."""
    run = tmp_path / "run"
    (run / "eval_val").mkdir(parents=True)
    (run / "collapse").mkdir()
    metrics = {"miou": 0.5, "head_miou": 0.9, "common_miou": 0.6, "tail_miou": 0.2,
               "per_class": [{"name": "wall", "gt_points": 10, "iou": 0.9}, {"name": "ball", "gt_points": 0, "iou": None}]}
    (run / "eval_val" / "metrics.json").write_text(json.dumps(metrics))
    (run / "val.jsonl").write_text("\n".join(json.dumps({"iteration": i, "head_miou": 0.9, "common_miou": 0.5,
                                                          "tail_miou": t}) for i, t in ((500, 0.1), (1000, 0.3))))
    (run / "log.jsonl").write_text("\n".join(json.dumps({"iteration": i, "loss_ceco": 3.0 - i / 1000}) for i in range(0, 1000, 5)))
    space = lambda v: {"overall": {"equiangular_means": v}}  # noqa: E731
    record = {"metrics": {"overall": {"equiangular_means": 0.4}, "tail": {"equiangular_means": 0.5}},
              "center_metrics": space(0.2), "center_metrics_shared": space(0.3)}
    (run / "collapse" / "collapse.json").write_text(json.dumps({"checkpoints": [{"metrics": {}}, record]}))
    s = study_v2.summarize_run(run, "ceco", 1, "abc", 12.0)
    assert s["val"]["tail"] == pytest.approx(20) and s["val"]["per_class"] == {"wall": pytest.approx(90)}
    assert [c["iteration"] for c in s["curve"]] == [500, 1000] and s["curve"][1]["tail"] == pytest.approx(30)
    assert s["loss_ceco"][:2] == [[0, 3.0], [25, 2.975]]  # every fifth logged value
    assert s["collapse"] == {"equiangular_means": 0.4, "tail_equiangular_means": 0.5,
                             "center_equiangular_means": 0.2, "center_equiangular_means_shared": 0.3}


def test_an_interim_reading_judges_nothing(tmp_path):
    """With the pilot's seed count given, fewer paired seeds in any comparison leave the verdict
    open, even where the seeds so far would pass; the report says it is interim."""
    ce = [30.0, 32.0, 28.0]
    records = [summary("ce", s, t) for s, t in enumerate(ce)]
    records += [summary(arm, s, t + 8.0 + s, std_cos=0.25 if arm == "ceco" else 0.3)
                for arm in ("ceco", "balanced_softmax", "repeat_factor") for s, t in enumerate(ce)]
    records += [summary("ceco_balanced_softmax", s, t + 17.0 + s, std_cos=0.25) for s, t in enumerate(ce[:2])]
    write(tmp_path, records)
    runs = load_summaries(tmp_path)
    assert decide(runs)["verdict"] == "CeCo helps the tail"  # what reading early would say
    interim = decide(runs, seeds=3)
    assert interim["verdict"].startswith("incomplete: 0 of 3")  # no post-hoc arm yet
    assert interim["comparisons"]["ceco"]["passes"]  # the comparisons are still shown
    doc = tmp_path / "study.md"
    write_report(runs, pilot_summary(runs), interim, doc, 5.0)
    assert "*Interim reading" in doc.read_text() and "5 min of wall time so far" in doc.read_text()
    for s in range(3):  # the post-hoc arm's values live in the CE summaries
        records[s]["posthoc"] = {"ce_logit_adjusted": {**records[s]["val"], "tail": ce[s] + 1.0}}
    records.append(summary("ceco_balanced_softmax", 2, ce[2] + 19.0, std_cos=0.25))
    write(tmp_path, records)
    assert decide(load_summaries(tmp_path), seeds=3)["verdict"] == "CeCo helps the tail"


def test_report_only_writes_the_decision_and_the_block_from_committed_summaries(tmp_path):
    ce = [30.0, 32.0, 28.0]
    write(tmp_path, [summary("ce", s, t) for s, t in enumerate(ce)]
          + [summary("ceco", s, t - 1.0) for s, t in enumerate(ce)])
    (tmp_path / "pilot.json").write_text(json.dumps(pilot_summary(load_summaries(tmp_path))))
    (tmp_path / "timing.json").write_text(json.dumps({"minutes": 7.0, "cores": 2}))
    doc = tmp_path / "study.md"
    doc.write_text("# Study\n")
    tool = Path(__file__).resolve().parents[1] / "tools" / "study_v2.py"
    subprocess.run([sys.executable, str(tool), "--report-only", "--results", str(tmp_path), "--doc", str(doc)],
                   check=True, capture_output=True)
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["comparisons"]["ceco"]["tail"]["mean"] == pytest.approx(-1.0)
    assert BEGIN in doc.read_text() and decision["verdict"] in doc.read_text()
