"""Imbalance factors on hand-made scenes, correlations against numpy, and the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pointseg.analysis.imbalance import (
    accuracy_correlations,
    analyze_imbalance,
    count_split,
    imbalance_factor,
    load_class_counts,
    read_class_accuracy,
)
from pointseg.meta import class_table
from pointseg.utils.io import save_npy

REPO = Path(__file__).resolve().parents[1]

# Per scene the labels; the hand counts below follow from these.
SCENES = {
    "scene0000_00": [0, 0, 0, 0, 1, -1],
    "scene0001_00": [0, 0, 2, 2, 2],
    "scene0002_00": [0, 1, 1, -1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5],
    "scene0003_00": [5, 0, 7],
}
# points: c0 = 4+2+1+1 = 8, c1 = 1+2 = 3, c2 = 3, c5 = 10+1 = 11, c7 = 1  → IF 11/1
# scenes: c0 = 4, c1 = 2, c2 = 1, c5 = 2, c7 = 1                       → IF 4/1
POINTS = {0: 8, 1: 3, 2: 3, 5: 11, 7: 1}
CENTERS = {0: 4, 1: 2, 2: 1, 5: 2, 7: 1}


def make_data(root: Path, dtype=np.int16) -> Path:
    for name, labels in SCENES.items():
        save_npy(root / "train" / name / "segment200.npy", np.array(labels, dtype=dtype))
    return root


def load_tool(name: str):
    """The command behind ``tools/<name>.py``."""
    return importlib.import_module(f"pointseg.cli.{name}")


def test_counts_and_factors_by_hand(tmp_path):
    counts = count_split(make_data(tmp_path))
    assert {i: int(n) for i, n in enumerate(counts.points) if n} == POINTS
    assert {i: int(n) for i, n in enumerate(counts.scenes) if n} == CENTERS
    assert imbalance_factor(counts.points) == pytest.approx(11.0)
    assert imbalance_factor(counts.scenes) == pytest.approx(4.0)
    assert imbalance_factor(np.zeros(3)) is None
    res = analyze_imbalance(counts)
    assert res["num_classes_present"] == 5
    split_of = class_table().split
    head = [c for c in POINTS if split_of[c] == "head"]
    assert res["per_split"]["head"]["num_classes_present"] == len(head)


def test_stats_json_is_used_when_present(tmp_path, caplog):
    make_data(tmp_path)
    pts = [0] * 200
    pts[3] = 5
    pts[4] = 50
    (tmp_path / "stats.json").write_text(
        json.dumps({"splits": {"train": {"class_point_counts": pts, "class_scene_counts": {"3": 1, "4": 5}}}})
    )
    counts = load_class_counts(tmp_path)
    assert counts.source.endswith("stats.json")
    assert imbalance_factor(counts.points) == 10.0 and imbalance_factor(counts.scenes) == 5.0
    (tmp_path / "stats.json").write_text(json.dumps({"splits": {"test": {"num_scenes": 3}}}))  # no train counts: scan instead
    with caplog.at_level("WARNING"):
        assert load_class_counts(tmp_path).points[5] == 11
    assert "counting the scenes" in caplog.text


def test_correlations_match_numpy_corrcoef():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 10**6, 40)
    points[:3] = 0  # absent classes are left out
    centers = np.maximum(points // 1000, 1)
    acc = np.clip(np.log10(np.maximum(points, 1)) / 6 + rng.normal(0, 0.1, 40), 0, 1)
    acc[5] = np.nan  # no accuracy: left out
    res = accuracy_correlations(acc, points, centers)
    ok = (points > 0) & np.isfinite(acc)
    assert res["num_classes"] == ok.sum() == 36
    for key, c in (("points", points), ("centers", centers)):
        raw = np.corrcoef(c[ok], acc[ok])[0, 1]
        log = np.corrcoef(np.log10(c[ok]), acc[ok])[0, 1]
        assert res[key]["raw"]["r"] == pytest.approx(raw)
        assert res[key]["log10"]["r"] == pytest.approx(log)
        assert 0 <= res[key]["log10"]["p"] <= 1
    assert accuracy_correlations(acc[:2], points[3:5], centers[3:5])["points"]["raw"]["r"] is None


def write_metrics(path: Path, acc: dict[int, float | None]) -> Path:
    t = class_table()
    rows = [
        {"index": i, "scannet_id": int(t.scannet_id[i]), "name": t.name[i], "split": t.split[i],
         "iou": None if a is None else a / 2, "acc": a, "gt_points": 10}
        for i, a in acc.items()
    ]
    path.write_text(json.dumps({"miou": 0.1, "per_class": rows}))
    return path


def test_cli_writes_json_and_plot(tmp_path, capsys):
    data = make_data(tmp_path / "data", dtype=np.int64)
    metrics = write_metrics(tmp_path / "metrics.json", {0: 0.9, 1: 0.5, 2: 0.4, 5: 0.8, 7: 0.1, 9: None})
    out = tmp_path / "out"
    assert load_tool("imbalance").main(["--data", str(data), "--metrics", str(metrics), "--out", str(out)]) == 0
    res = json.loads((out / "imbalance.json").read_text())
    assert res["point_imbalance_factor"] == 11.0 and res["center_imbalance_factor"] == 4.0
    cls = [0, 1, 2, 5, 7]
    a = np.array([0.9, 0.5, 0.4, 0.8, 0.1])
    expected = np.corrcoef(np.log10([POINTS[c] for c in cls]), a)[0, 1]
    assert res["accuracy_correlation"]["points"]["log10"]["r"] == pytest.approx(expected)
    assert res["per_class"][9]["acc"] is None and res["per_class"][5]["centers"] == 2
    png = (out / "imbalance.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "imbalance factor: points 11" in capsys.readouterr().out


def test_bad_input_names_the_file(tmp_path):
    save_npy(tmp_path / "train" / "s0" / "segment200.npy", np.array([0, 200]))
    with pytest.raises(ValueError, match=r"s0/segment200.npy: label 200"):
        count_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="no <scene>/segment200.npy"):
        count_split(tmp_path / "nothing")
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"miou": 0.3}))
    with pytest.raises(ValueError, match="metrics.json: not a metrics.json"):
        read_class_accuracy(bad)
    assert load_tool("imbalance").main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
