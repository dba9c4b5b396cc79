"""The results block of the second study in ``docs/study.md``, written from the run summaries alone."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pointseg.analysis.study_v2 import ARMS, DESIGN, POSTHOC, SPLITS
from pointseg.utils.io import atomic_write_text

BEGIN, END = "<!-- second study results: begin (written by tools/study_v2.py) -->", "<!-- second study results: end -->"


def _label(arm: str) -> str:
    return ARMS[arm][1] if arm in ARMS else POSTHOC[arm][2] if arm in POSTHOC else arm


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.1f} ± {sd:.1f}"


def report_markdown(runs: dict[str, dict[int, dict]], pilot: dict[str, Any], decision: dict[str, Any],
                    minutes: float) -> str:
    interim = decision["verdict"].startswith("incomplete")
    lines = [
        *(["*Interim reading: not every run is in, and the rule judges only when they are.*", ""] if interim else []),
        f"Benchmark `{DESIGN['preset']}` (data seed {DESIGN['data_seed']}), batch {DESIGN['batch_size']}, "
        f"{pilot['iterations']} iterations; {minutes:.0f} min of wall time {'so far' if interim else 'in all'} on this study's machines.",
        "",
        "**Pilot.** CE's val tail mIoU gained "
        + ", ".join(f"{g:+.1f} (seed {s})" for s, g in sorted(pilot["last_third_tail_gain"].items(), key=lambda x: int(x[0])))
        + f" points over the last third of training: {'converged' if pilot['converged'] else 'not converged'} by the "
        f"criterion (< {DESIGN['convergence_gain']:g}). Paired tail differences CeCo − CE: "
        + ", ".join(f"{d:+.1f}" for d in pilot["paired_tail_differences"])
        + (f" (SD {pilot['paired_tail_sd']:.2f}); seeds needed for {DESIGN['power']:.0%} power at "
           f"+{DESIGN['target_gain']}: {pilot['seeds_needed']}, run: {pilot['seeds']} (cap {DESIGN['max_seeds']}); "
           f"minimum detectable effect at that count: {pilot['minimum_detectable_effect']:.1f} points."
           if "seeds" in pilot else "."),
        "",
        "| arm | seeds | mIoU | head | common | tail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm in [*ARMS, *POSTHOC]:
        seeds = runs.get(arm, {})
        if not seeds:
            continue
        vals = {k: [r["val"][k] for r in seeds.values()] for k in ("miou", *SPLITS)}
        lines.append(f"| {_label(arm)} | {len(seeds)} | " + " | ".join(_mean_sd(vals[k]) for k in ("miou", *SPLITS)) + " |")
    upper = f"{1 - DESIGN['alpha']:.0%} upper bound of tail Δ"
    lines += ["", f"| arm − reference | n | tail Δ (mean ± SD) | p (one-sided) | minimum detectable Δ | {upper} | head Δ "
              "| checks | passes |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, c in decision["comparisons"].items():
        t = c["tail"]
        checks = ", ".join(f"{k} {'✔' if v else '✘'}" for k, v in c["checks"].items())
        lines.append(f"| {_label(arm)} − {_label(c['reference'])} | {t['n']} | {t['mean']:+.1f} ± {t['sd']:.1f} | "
                     f"{t['p']:.3f} | {c['minimum_detectable_effect']:.1f} | {t['upper']:+.1f} | {c['head_mean']:+.1f} | {checks} | "
                     f"{'yes' if c['passes'] else 'no'} |")
    lines += ["", f"*The minimum detectable Δ is the true gain the rule's test finds with {DESIGN['power']:.0%} power at "
              f"the observed SD; the upper bound (one-sided, a reading beside the rule, which it does not change) is the "
              f"largest true gain the paired seeds leave plausible.*",
              "", f"**Verdict (by the rule):** {decision['verdict']}."]
    return "\n".join(lines)


def write_report(runs: dict[str, dict[int, dict]], pilot: dict[str, Any], decision: dict[str, Any],
                 doc: str | os.PathLike, minutes: float) -> Path:
    """Replace the block between the markers of ``doc`` (appended when absent); the rest is kept."""
    doc = Path(doc)
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{BEGIN}\n{report_markdown(runs, pilot, decision, minutes)}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
    return doc
