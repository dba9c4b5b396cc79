"""Submission files: round trip, PLY header counts, and the validator on each kind of broken zip."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pointseg import meta
from pointseg.evaluation.submission import (
    ply_vertex_count,
    raw_vertex_counts,
    read_submission,
    validate_submission,
    write_prediction_txt,
    write_submission,
)

ROOT = Path(__file__).resolve().parents[1]
SCENES = {"scene0707_00": 7, "scene0708_00": 5, "scene0709_00": 9}


def _load_tool(name: str):
    """The command behind ``tools/<name>.py``."""
    return importlib.import_module(f"pointseg.cli.{name}")


def _write_mesh(path: Path, n: int, text: bool = False) -> None:
    v = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"] = np.arange(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(v, "vertex")], text=text).write(str(path))


@pytest.fixture()
def raw(tmp_path) -> Path:
    raw = tmp_path / "raw"
    for i, (scene, n) in enumerate(SCENES.items()):
        _write_mesh(raw / "scans_test" / scene / f"{scene}_vh_clean_2.ply", n, text=i == 0)
    (raw / "scannetv2_test.txt").write_text("\n".join(SCENES) + "\n")
    return raw


@pytest.fixture()
def predictions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {s: rng.integers(0, 200, n) for s, n in SCENES.items()}


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _texts(predictions) -> dict[str, str]:
    ids = meta.class_table().scannet_id
    return {f"{s}.txt": "".join(f"{i}\n" for i in ids[p]) for s, p in predictions.items()}


def test_ply_header_count(raw) -> None:
    assert ply_vertex_count(raw / "scans_test/scene0707_00/scene0707_00_vh_clean_2.ply") == 7  # ascii
    assert ply_vertex_count(raw / "scans_test/scene0708_00/scene0708_00_vh_clean_2.ply") == 5  # binary
    bad = raw / "bad.ply"
    bad.write_bytes(b"not a ply\n")
    with pytest.raises(ValueError, match="bad.ply"):
        ply_vertex_count(bad)


def test_round_trip(tmp_path, raw, predictions) -> None:
    zpath = write_submission(tmp_path / "submission.zip", predictions)
    expected, problems = raw_vertex_counts(raw, "test")
    assert expected == SCENES and problems == []
    assert validate_submission(zpath, expected) == []
    back = read_submission(zpath)
    ids = meta.class_table().scannet_id
    assert set(back) == set(predictions)
    for s, p in predictions.items():
        np.testing.assert_array_equal(back[s], ids[p])  # ScanNet ids, not indices
        np.testing.assert_array_equal(meta.class_table().to_index(back[s]), p)
    with zipfile.ZipFile(zpath) as zf:
        assert sorted(zf.namelist()) == sorted(f"{s}.txt" for s in SCENES)  # at the root
    assert _load_tool("validate_submission").main([str(zpath), "--raw", str(raw)]) == 0


def test_single_txt_matches_zip_entry(tmp_path, predictions) -> None:
    write_prediction_txt(tmp_path / "scene0707_00.txt", predictions["scene0707_00"])
    assert (tmp_path / "scene0707_00.txt").read_text() == _texts(predictions)["scene0707_00.txt"]
    with pytest.raises(ValueError, match="not a class index"):
        write_prediction_txt(tmp_path / "x.txt", np.array([0, 200]))


@pytest.mark.parametrize(
    "breakage, scene, message",
    [
        ("missing", "scene0708_00", "missing"),
        ("extra", "scene0999_00", "extra file"),
        ("lines", "scene0709_00", "8 lines but the mesh has 9"),
        ("invalid_id", "scene0707_00", "not a ScanNet200 class id"),
        ("zero_id", "scene0707_00", "not a ScanNet200 class id"),
        ("non_integer", "scene0708_00", "not an integer"),
        ("empty_line", "scene0708_00", "not an integer"),
        ("subfolder", "scene0707_00", "not at the zip root"),
    ],
)
def test_validator_names_each_problem(tmp_path, raw, predictions, capsys, breakage, scene, message) -> None:
    files = _texts(predictions)
    if breakage == "missing":
        del files[f"{scene}.txt"]
    elif breakage == "extra":
        files[f"{scene}.txt"] = "1\n"
    elif breakage == "lines":
        files[f"{scene}.txt"] = "".join(files[f"{scene}.txt"].splitlines(keepends=True)[:-1])
    elif breakage in ("invalid_id", "zero_id"):  # 1192 is past the last id; 0 is "unannotated"
        lines = files[f"{scene}.txt"].splitlines(keepends=True)
        files[f"{scene}.txt"] = ("1192\n" if breakage == "invalid_id" else "0\n") + "".join(lines[1:])
    elif breakage == "non_integer":
        lines = files[f"{scene}.txt"].splitlines(keepends=True)
        files[f"{scene}.txt"] = "".join(lines[:2]) + "3.0\n" + "".join(lines[3:])
    elif breakage == "empty_line":
        lines = files[f"{scene}.txt"].splitlines(keepends=True)
        files[f"{scene}.txt"] = "".join(lines[:2]) + "\n" + "".join(lines[3:])
    elif breakage == "subfolder":
        files[f"preds/{scene}.txt"] = files.pop(f"{scene}.txt")
    zpath = _zip(tmp_path / "submission.zip", files)
    expected, _ = raw_vertex_counts(raw, "test")
    problems = validate_submission(zpath, expected)
    hits = [p for p in problems if scene in p and message in p]
    assert hits, problems
    # the command-line tool prints it and fails
    assert _load_tool("validate_submission").main([str(zpath), "--raw", str(raw)]) == 1
    out = capsys.readouterr().out
    assert scene in out and message in out


def test_validator_reports_every_problem_at_once(tmp_path, raw, predictions) -> None:
    files = _texts(predictions)
    del files["scene0707_00.txt"]
    files["scene0708_00.txt"] = "1\n"
    files["scene0709_00.txt"] = files["scene0709_00.txt"].replace("\n", "\nx\n", 1)
    zpath = _zip(tmp_path / "s.zip", files)
    problems = validate_submission(zpath, raw_vertex_counts(raw, "test")[0])
    for scene in SCENES:
        assert any(scene in p for p in problems), problems
    assert len(problems) >= 4  # missing, line count, non-integer, line count


def test_not_a_zip_and_missing_mesh(tmp_path, raw) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"hello")
    assert "cannot open" in validate_submission(junk, {"a": 1})[0]
    (raw / "scans_test/scene0709_00/scene0709_00_vh_clean_2.ply").unlink()
    _, problems = raw_vertex_counts(raw, "test")
    assert problems and "scene0709_00" in problems[0] and "not found" in problems[0]
