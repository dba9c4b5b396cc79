"""The second long-tail study (``make study``): a pilot, positive controls, converged runs, power.

The design, fixed before any of its runs, is in ``docs/study.md`` ("Second study"); this module
holds it as data (:data:`ARMS`, :data:`POSTHOC`, :data:`COMPARISONS`, :data:`DESIGN`) and applies
it: the pilot's convergence check and seed count (:func:`pilot_summary`), one small JSON summary
per finished run (:func:`summarize_run`, committed under ``docs/study/v2/`` so that a study
spread over several machines and sessions goes on where it stopped), and the decision rule
(:func:`decide`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pointseg.analysis.power import minimum_detectable_effect, paired_t_test, seeds_for_power

# arm → (config, label). Every arm trains configs/longtail/<arm>.yaml with the DESIGN's batch,
# schedule and benchmark; seed s of every arm sees the same initial weights and data order
# (repeat-factor sampling visits scenes in an order of its own).
ARMS: dict[str, tuple[str, str]] = {
    "ce": ("configs/longtail/baseline.yaml", "CE"),
    "ceco": ("configs/longtail/ceco.yaml", "CE + CeCo (released head, λ = 0.4)"),
    "balanced_softmax": ("configs/longtail/balanced_softmax.yaml", "balanced softmax"),
    "repeat_factor": ("configs/longtail/repeat_factor.yaml", "CE + repeat-factor sampling"),
    "ceco_balanced_softmax": ("configs/longtail/ceco_balanced_softmax.yaml", "balanced softmax + CeCo"),
}
# evaluation-only arm → (trained arm whose checkpoints it evaluates, pointseg-test arguments, label)
POSTHOC: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ce_logit_adjusted": ("ce", ("--logit-adjust", "1.0"), "CE + post-hoc logit adjustment (τ = 1)"),
}
POSITIVE_CONTROLS = ("ce_logit_adjusted", "balanced_softmax", "repeat_factor")
CECO_ARMS = ("ceco", "ceco_balanced_softmax")
# (arm, reference): each arm is judged against its reference, seed by seed.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("ceco", "ce"),
    ("ce_logit_adjusted", "ce"),
    ("balanced_softmax", "ce"),
    ("repeat_factor", "ce"),
    ("ceco_balanced_softmax", "balanced_softmax"),
)
# Amendment 1 (docs/study.md), made before any run of the second pilot: the first pilot
# ("compact" rooms, 3000 iterations; its summaries in docs/study/v2/pilot1/) had not converged,
# so the schedule doubled and, to fit the budget, the benchmark shrank to the "small" preset.
DESIGN: dict[str, Any] = {
    "preset": "small",  # pointseg.synthetic.longtail.PRESETS
    "data_seed": 0,
    "batch_size": 4,
    "pilot_iterations": 6000,  # the schedule the pilot tests
    "val_every": 500,  # voxel-level validations along every run: the learning curves
    "pilot_seeds": (0, 1, 2),
    "pilot_arms": ("ce", "ceco"),
    "convergence_gain": 2.0,  # CE's val tail mIoU may gain less than this over the last third
    "target_gain": 4.6,  # the paper's tail gain over its strongest baseline (ScanNet200 val)
    "alpha": 0.05,  # one-sided paired t-test
    "power": 0.8,
    "head_margin": 1.0,  # head mIoU may fall by at most this many points (mean paired difference)
    "max_seeds": 8,  # the compute budget's cap on the seed count
}
SPLITS = ("head", "common", "tail")


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def learning_curve(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Voxel-level val mIoU per split at every validation of a run (``val.jsonl``)."""
    out = []
    for r in _records(Path(run_dir) / "val.jsonl"):
        if "error" in r or "tail_miou" not in r:
            continue
        out.append({"iteration": int(r["iteration"]), **{s: 100 * float(r[f"{s}_miou"]) for s in SPLITS}})
    return sorted(out, key=lambda r: r["iteration"])


def last_third_gain(curve: list[dict[str, float]], split: str = "tail") -> float:
    """``split`` mIoU at the last validation minus at the validation nearest two thirds of it."""
    if len(curve) < 2:
        return float("nan")
    end = curve[-1]
    third = min(curve[:-1], key=lambda r: abs(r["iteration"] - 2 * end["iteration"] / 3))
    return end[split] - third[split]


def summarize_run(run_dir: str | os.PathLike, arm: str, seed: int, commit: str, minutes: float | None) -> dict:
    """The small, committed record of one finished run: its val metrics (vertex level, and those
    of every post-hoc evaluation), learning curve, L_CR series and final collapse statistics."""
    d = Path(run_dir)
    metrics = json.loads((d / "eval_val" / "metrics.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {
        "arm": arm, "seed": seed, "commit": commit, "minutes": minutes,
        "val": _split_metrics(metrics), "curve": learning_curve(d),
        "loss_ceco": [[r["iteration"], r["loss_ceco"]] for r in _records(d / "log.jsonl") if "loss_ceco" in r][::5],
    }
    for post, (trained, _, _) in POSTHOC.items():
        path = d / f"eval_val_{post}" / "metrics.json"
        if trained == arm and path.is_file():
            out.setdefault("posthoc", {})[post] = _split_metrics(json.loads(path.read_text(encoding="utf-8")))
    collapse = d / "collapse" / "collapse.json"
    if collapse.is_file():
        record = json.loads(collapse.read_text(encoding="utf-8"))["checkpoints"][-1]
        last = record["metrics"]
        out["collapse"] = {"equiangular_means": last["overall"]["equiangular_means"],
                           "tail_equiangular_means": last.get("tail", {}).get("equiangular_means")}
        # Std-cos of the embedded centers in the run's own center space and in the released
        # head's, shared by every arm (absent from records written before the shared space existed)
        for key, name in (("center_metrics", "center_equiangular_means"),
                          ("center_metrics_shared", "center_equiangular_means_shared")):
            if record.get(key):
                out["collapse"][name] = record[key]["overall"]["equiangular_means"]
    return out


def _split_metrics(metrics: dict) -> dict[str, Any]:
    per_class = {}
    for c in metrics.get("per_class", []):
        if c.get("gt_points") and c.get("iou") is not None and math.isfinite(float(c["iou"])):
            per_class[c["name"]] = 100 * float(c["iou"])
    return {"miou": 100 * float(metrics["miou"]), **{s: 100 * float(metrics[f"{s}_miou"]) for s in SPLITS},
            "per_class": per_class}


def load_summaries(folder: str | os.PathLike) -> dict[str, dict[int, dict]]:
    """arm → seed → summary, of every ``<arm>_seed<s>.json`` in ``folder`` (post-hoc arms included)."""
    out: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(folder).glob("*_seed*.json")):
        s = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(s["arm"], {})[int(s["seed"])] = s
        for post, values in s.get("posthoc", {}).items():
            out.setdefault(post, {})[int(s["seed"])] = {**s, "arm": post, "val": values, "collapse": s.get("collapse")}
    return out


def paired(runs: dict[str, dict[int, dict]], arm: str, ref: str, value) -> list[float]:
    """value(arm) − value(ref) over the seeds both have, in seed order."""
    a, b = runs.get(arm, {}), runs.get(ref, {})
    return [value(a[s]) - value(b[s]) for s in sorted(set(a) & set(b))]


def pilot_summary(runs: dict[str, dict[int, dict]], design: dict = DESIGN) -> dict[str, Any]:
    """The pilot's reading: CE's last-third tail gain (converged?), the paired SD of the tail
    differences CeCo − CE, the seeds the rule needs to see the target gain, and the smallest gain
    that many seeds see. Only the pilot's seeds are read: the study's later seeds of the same arms
    must not resize the study that they belong to."""
    pilot_runs = {arm: {s: r for s, r in runs.get(arm, {}).items() if s in design["pilot_seeds"]}
                  for arm in design["pilot_arms"]}
    gains = {s: last_third_gain(r["curve"]) for s, r in pilot_runs["ce"].items()}
    tail = paired(pilot_runs, "ceco", "ce", lambda r: r["val"]["tail"])
    sd = float("nan")
    if len(tail) >= 2:
        mean = sum(tail) / len(tail)
        sd = math.sqrt(sum((t - mean) ** 2 for t in tail) / (len(tail) - 1))
    out: dict[str, Any] = {"iterations": design["pilot_iterations"], "last_third_tail_gain": gains,
                           "converged": bool(gains) and all(g < design["convergence_gain"] for g in gains.values()),
                           "paired_tail_differences": tail, "paired_tail_sd": sd}
    if math.isfinite(sd):
        needed = seeds_for_power(design["target_gain"], sd, design["power"], design["alpha"])
        seeds = min(max(needed, len(design["pilot_seeds"])), design["max_seeds"])
        out.update(seeds_needed=needed, seeds=seeds,
                   minimum_detectable_effect=minimum_detectable_effect(sd, seeds, design["power"], design["alpha"]))
    return out


def decide(runs: dict[str, dict[int, dict]], design: dict = DESIGN, seeds: int | None = None) -> dict[str, Any]:
    """The decision rule of docs/study.md applied to every comparison, and the study's verdict.

    ``seeds``: the number the pilot fixed. Until every comparison has that many paired seeds the
    verdict is "incomplete" (an interim reading shows the comparisons but judges nothing: a
    verdict read early and then kept would change the test's error rates).
    """
    results: dict[str, Any] = {}
    for arm, ref in COMPARISONS:
        tail = paired(runs, arm, ref, lambda r: r["val"]["tail"])
        head = paired(runs, arm, ref, lambda r: r["val"]["head"])
        if len(tail) < 2:
            continue
        test = paired_t_test(tail, design["alpha"])
        head_mean = sum(head) / len(head)
        checks = {"tail_gain": test["significant"], "head_kept": head_mean >= -design["head_margin"]}
        if arm in CECO_ARMS:
            std_cos = paired(runs, arm, ref, lambda r: r["collapse"]["equiangular_means"]
                             if r.get("collapse") else float("nan"))
            checks["std_cos_falls"] = bool(std_cos) and sum(std_cos) / len(std_cos) < 0
        results[arm] = {"reference": ref, "tail": test, "head_mean": head_mean, "checks": checks,
                        "passes": all(checks.values()),
                        "minimum_detectable_effect": minimum_detectable_effect(test["sd"], test["n"], design["power"],
                                                                               design["alpha"])}
    sensitive = any(results.get(a, {}).get("checks", {}).get("tail_gain", False) for a in POSITIVE_CONTROLS)
    ceco = results.get("ceco")
    paired_seeds = min((results[a]["tail"]["n"] if a in results else 0) for a, _ in COMPARISONS)
    if seeds is not None and paired_seeds < seeds:
        verdict = f"incomplete: {paired_seeds} of {seeds} paired seeds in every comparison (no verdict before all are in)"
    elif ceco is None:
        verdict = "incomplete"
    elif not sensitive:
        verdict = "benchmark could not register a tail gain: no positive control passed the tail check"
    elif ceco["passes"]:
        verdict = "CeCo helps the tail"
    else:
        verdict = "CeCo does not help the tail on a benchmark shown able to register a tail gain"
    return {"comparisons": results, "sensitive": sensitive, "verdict": verdict}
