"""Raw ScanNet scans → scene folders: label rule, normals, validation, driver, tool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData
from raw_helpers import UNKNOWN_LABEL, grid_mesh, make_release, write_grid_scene

from pointseg import meta
from pointseg.preprocessing import raw as rawmod
from pointseg.preprocessing.labels import scannet200_labels
from pointseg.preprocessing.normals import FALLBACK_NORMAL, vertex_normals
from pointseg.preprocessing.preprocess import preprocess_scannet200
from pointseg.preprocessing.raw import RawSceneError, read_raw_scene, write_raw_scene

REPO = Path(__file__).resolve().parents[1]
NAMES = meta.class_table().name
CHAIR, WALL, TABLE, BOOK = (NAMES.index(n) for n in ("chair", "wall", "table", "book"))
NON200_LABEL = "drawer"  # a tsv row (id 25) that is not one of the 200 classes


# ---------------------------------------------------------------------------------------------
# helpers


def official_reference(seg_indices, groups):
    """The official script, group by group with np.isin (the oracle for the vectorized rule)."""
    table = meta.raw_category_table()
    valid = set(meta.class_table().scannet_id.tolist())
    ids = np.zeros(len(seg_indices), dtype=np.int64)
    inst = np.full(len(seg_indices), -1, dtype=np.int64)
    for g in groups:
        label_id = table.get(g["label"], 0)
        label_id = label_id if label_id in valid else 0
        p = np.where(np.isin(seg_indices, np.asarray(g["segments"])))[0]
        ids[p] = label_id
        inst[p] = g["id"]
    segment = np.array([meta.class_table().scannet_id.tolist().index(i) if i else -1 for i in ids])
    return segment, inst


# ---------------------------------------------------------------------------------------------
# label rule


def test_label_rule_cases():
    seg = np.array([7, 7, 3, 3, 9, 9, 5, 5, 11, 11, 40])
    groups = [
        {"id": 10, "segments": [7, 3], "label": "chair"},
        {"id": 11, "segments": [3], "label": "table"},  # overwrites segment 3
        {"id": 12, "segments": [9], "label": "books"},  # raw name of the class "book" (id 22)
        {"id": 13, "segments": [5, 999], "label": NON200_LABEL},  # 999 occurs nowhere
        {"id": 14, "segments": [11], "label": "wall"},
        {"id": 15, "segments": [11], "label": UNKNOWN_LABEL},  # unknown overwrites a known one
    ]
    segment, instance, unknown = scannet200_labels(seg, groups)
    assert segment.tolist() == [CHAIR, CHAIR, TABLE, TABLE, BOOK, BOOK, -1, -1, -1, -1, -1]
    assert instance.tolist() == [10, 10, 11, 11, 12, 12, 13, 13, 15, 15, -1]
    assert unknown == 2  # only the vertices whose final group is unknown
    assert meta.raw_category_table()["books"] == 22 and meta.class_table().scannet_id[BOOK] == 22


def test_label_rule_matches_official_loop_on_random_scenes():
    rng = np.random.default_rng(0)
    labels = ["chair", "wall", "books", "kitchen cabinets", NON200_LABEL, UNKNOWN_LABEL, "object", "floor"]
    for _ in range(5):
        seg = rng.integers(0, 60, 500) * 7 + 1000  # sparse, large segment ids
        groups = [
            {"id": int(k), "segments": rng.choice(np.unique(seg), rng.integers(1, 8)).tolist(), "label": str(rng.choice(labels))}
            for k in rng.permutation(25)
        ]
        segment, instance, _ = scannet200_labels(seg, groups)
        ref_segment, ref_instance = official_reference(seg, groups)
        np.testing.assert_array_equal(segment, ref_segment)
        np.testing.assert_array_equal(instance, ref_instance)


def test_label_rule_no_groups():
    segment, instance, unknown = scannet200_labels(np.array([1, 2, 3]), [])
    assert segment.tolist() == [-1, -1, -1] and instance.tolist() == [-1, -1, -1] and unknown == 0


# ---------------------------------------------------------------------------------------------
# normals


def test_normals_flat_grid():
    v, f = grid_mesh(5)
    np.testing.assert_allclose(vertex_normals(v, f), np.tile([0, 0, 1], (25, 1)), atol=1e-6)
    np.testing.assert_allclose(vertex_normals(v, f[:, ::-1]), np.tile([0, 0, -1], (25, 1)), atol=1e-6)


def test_normals_cube_corner_is_diagonal():
    # The three faces of the unit cube that meet at the origin, wound to face outwards (-x, -y, -z).
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    f = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 3]])
    n = vertex_normals(v, f)
    np.testing.assert_allclose(n[0], -np.ones(3) / np.sqrt(3), atol=1e-6)
    assert n.dtype == np.float32


def test_normals_area_weighting_by_hand():
    # At vertex 0: triangle A (area 2) has cross (0, 0, 4), triangle B (area 1/2) has (0, 1, 0);
    # sum (0, 1, 4) / sqrt(17). Vertex 5 is in no face and gets the documented fallback.
    v = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [1, 0, 0], [9, 9, 9]], dtype=float)
    f = np.array([[0, 1, 2], [0, 3, 4]])
    n = vertex_normals(v, f)
    np.testing.assert_allclose(n[0], np.array([0, 1, 4]) / np.sqrt(17), atol=1e-6)
    np.testing.assert_allclose(n[5], FALLBACK_NORMAL)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# raw files


def test_write_read_roundtrip_and_deterministic_bytes(tmp_path):
    axis = np.arange(16, dtype=float).reshape(4, 4) / 7 + np.eye(4)
    groups = [{"id": 3, "segments": [100, 101], "label": "chair"}, {"id": 4, "objectId": 9, "segments": [102], "label": "wall"}]
    v, c, f = write_grid_scene(tmp_path / "a", "scene0001_00", groups, axis=axis)
    write_grid_scene(tmp_path / "b", "scene0001_00", groups, axis=axis)
    files = sorted(p.name for p in (tmp_path / "a" / "scene0001_00").iterdir())
    assert files == [
        "scene0001_00.aggregation.json", "scene0001_00.txt",
        "scene0001_00_vh_clean_2.0.010000.segs.json", "scene0001_00_vh_clean_2.ply",
    ]
    for name in files:
        assert (tmp_path / "a" / "scene0001_00" / name).read_bytes() == (tmp_path / "b" / "scene0001_00" / name).read_bytes()

    ply = PlyData.read(str(tmp_path / "a" / "scene0001_00" / "scene0001_00_vh_clean_2.ply"))
    assert not ply.text and ply.byte_order == "<"
    assert [str(p) for p in ply["face"].properties] == ["property list uchar int vertex_indices"]
    agg = json.loads((tmp_path / "a" / "scene0001_00" / "scene0001_00.aggregation.json").read_text())
    assert agg["segGroups"][1] == {"id": 4, "objectId": 9, "segments": [102], "label": "wall"}

    scene = read_raw_scene(tmp_path / "a" / "scene0001_00", "scene0001_00", labelled=True)
    np.testing.assert_array_equal(scene.vertices, v.astype(np.float32))
    np.testing.assert_array_equal(scene.colors, c)
    np.testing.assert_array_equal(scene.faces, f)
    np.testing.assert_array_equal(scene.seg_indices, 100 + np.arange(16) // 4)
    np.testing.assert_array_equal(scene.axis_alignment, axis)
    assert [g["label"] for g in scene.seg_groups] == ["chair", "wall"]


def test_writer_checks_everything_before_writing(tmp_path):
    v, f = grid_mesh(2)
    with pytest.raises(ValueError, match="seg_indices"):
        write_raw_scene(tmp_path / "s", "s", v, np.zeros((4, 3), np.uint8), f, np.arange(3), [])
    with pytest.raises(ValueError, match="colors"):
        write_raw_scene(tmp_path / "s", "s", v, np.full((4, 3), 300), f)
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to kill a writer midway")
def test_killed_writer_leaves_no_partial_scene_folder(tmp_path, monkeypatch):
    """A writer killed after the mesh (a forked child that exits on the spot) leaves no folder
    under the scene's name, only a temporary that remove_temporaries deletes; a writer that fails
    while replacing a scene leaves the old scene intact."""
    from pointseg.utils.io import remove_temporaries

    real_write_mesh = rawmod._write_mesh
    scans = tmp_path / "scans"
    scans.mkdir()
    pid = os.fork()
    if pid == 0:  # the child dies between the mesh and the JSON files, skipping every cleanup
        try:
            rawmod._write_mesh = lambda *a: (real_write_mesh(*a), os._exit(3))
            write_grid_scene(scans, "scene0001_00")
        finally:
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
    left = list(scans.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".scene0001_00.")  # a hidden temporary only
    assert (left[0] / "scene0001_00_vh_clean_2.ply").is_file()  # it did die after the mesh
    assert remove_temporaries(scans) == left and list(scans.iterdir()) == []

    def write_then_fail(path, *args):
        real_write_mesh(path, *args)
        raise OSError("disk full")

    write_grid_scene(scans, "scene0002_00")
    folder = scans / "scene0002_00"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(rawmod, "_write_mesh", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_grid_scene(scans, "scene0002_00", groups=[{"id": 0, "segments": [100], "label": "chair"}])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in scans.iterdir()] == ["scene0002_00"]


def test_test_scene_has_only_mesh_and_txt(tmp_path):
    write_grid_scene(tmp_path, "scene0707_00", labelled=False)
    assert sorted(p.name for p in (tmp_path / "scene0707_00").iterdir()) == ["scene0707_00.txt", "scene0707_00_vh_clean_2.ply"]
    scene = read_raw_scene(tmp_path / "scene0707_00", "scene0707_00", labelled=False)
    assert scene.seg_indices is None and np.array_equal(scene.axis_alignment, np.eye(4))


def _break(kind: str, d: Path, s: str) -> str:
    """Damage one file of the scene in ``d``; return the name of the file the error must name."""
    ply, segs, agg = d / f"{s}_vh_clean_2.ply", d / f"{s}_vh_clean_2.0.010000.segs.json", d / f"{s}.aggregation.json"
    if kind == "missing file":
        segs.unlink()
        return segs.name
    if kind == "truncated PLY":
        ply.write_bytes(ply.read_bytes()[:-20])
        return ply.name
    if kind == "malformed PLY":
        ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex banana\nend_header\n")
        return ply.name
    if kind == "malformed JSON":
        agg.write_text(agg.read_text()[:-5])
        return agg.name
    if kind == "segIndices length":
        data = json.loads(segs.read_text())
        data["segIndices"] = data["segIndices"][:-1]
        segs.write_text(json.dumps(data))
        return segs.name
    v, f = grid_mesh(4)
    c = np.zeros((16, 3), np.uint8)
    if kind == "NaN coordinate":
        v[5, 1] = np.nan
        rawmod._write_mesh(ply, v, c, f)
    elif kind == "inf coordinate":
        v[2, 0] = np.inf
        rawmod._write_mesh(ply, v, c, f)
    elif kind == "empty mesh":
        rawmod._write_mesh(ply, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.int64))
    elif kind == "face out of range":
        f[3, 2] = 16
        rawmod._write_mesh(ply, v, c, f)
    return ply.name


BAD_KINDS = ["missing file", "truncated PLY", "malformed PLY", "malformed JSON", "segIndices length",
             "NaN coordinate", "inf coordinate", "empty mesh", "face out of range"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_gives_one_line_error(tmp_path, kind):
    write_grid_scene(tmp_path, "scene0002_00")
    file = _break(kind, tmp_path / "scene0002_00", "scene0002_00")
    with pytest.raises(RawSceneError) as info:
        read_raw_scene(tmp_path / "scene0002_00", "scene0002_00", labelled=True)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"scene0002_00: {file}: ")
    assert isinstance(info.value, ValueError) and info.value.file == file


# ---------------------------------------------------------------------------------------------
# the driver


def test_preprocess_outputs_labels_stats_and_failures(tmp_path):
    raw = make_release(tmp_path / "raw", train=["scene0000_00", "scene0001_00", "scene0003_00", "scene0009_00"],
                       val=["scene0002_00"], test=["scene0707_00"])
    v0, c0, _ = write_grid_scene(raw / "scans", "scene0000_00")
    write_grid_scene(raw / "scans", "scene0001_00", groups=[
        {"id": 5, "segments": [100, 101], "label": "chair"}, {"id": 6, "segments": [101, 103], "label": "chair"}])
    write_grid_scene(raw / "scans", "scene0003_00")
    _break("NaN coordinate", raw / "scans" / "scene0003_00", "scene0003_00")
    write_grid_scene(raw / "scans", "scene0002_00", groups=[{"id": 0, "segments": [100, 101, 102, 103], "label": "table"}])
    write_grid_scene(raw / "scans_test", "scene0707_00", labelled=False)
    out = tmp_path / "data"

    summary = preprocess_scannet200(raw, out, workers=1, progress=False)

    assert summary.done == ["scene0000_00", "scene0001_00", "scene0002_00", "scene0707_00"]
    assert set(summary.failed) == {"scene0003_00", "scene0009_00"}
    assert summary.failed["scene0003_00"].startswith("scene0003_00: scene0003_00_vh_clean_2.ply: ")
    assert "NaN" in summary.failed["scene0003_00"]
    assert summary.failed["scene0009_00"] == "scene0009_00: scans/scene0009_00: missing folder"
    assert summary.unknown_category_vertices == 4 and summary.unknown_categories == [UNKNOWN_LABEL]
    assert not summary.ok and "FAILED scene0003_00" in summary.report()

    # Pointcept layout, plain np.load, dtypes, vertex order.
    folder = out / "train" / "scene0000_00"
    assert sorted(p.name for p in folder.iterdir()) == ["color.npy", "coord.npy", "instance.npy", "normal.npy", "segment200.npy"]
    data = {p.stem: np.load(p, allow_pickle=False) for p in folder.iterdir()}
    assert data["coord"].dtype == np.float32 and data["color"].dtype == np.uint8 and data["normal"].dtype == np.float32
    assert data["segment200"].dtype.kind == "i" and data["instance"].dtype == np.int32
    np.testing.assert_array_equal(data["coord"], v0.astype(np.float32))
    np.testing.assert_array_equal(data["color"], c0)
    np.testing.assert_allclose(data["normal"], np.tile([0, 0, 1], (16, 1)), atol=1e-6)
    assert data["segment200"].tolist() == [CHAIR] * 4 + [WALL] * 4 + [-1] * 8
    assert data["instance"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [-1] * 4
    seg1 = np.load(out / "train" / "scene0001_00" / "segment200.npy", allow_pickle=False)
    assert seg1.tolist() == [CHAIR] * 8 + [-1] * 4 + [CHAIR] * 4
    assert sorted(p.name for p in (out / "test" / "scene0707_00").iterdir()) == ["color.npy", "coord.npy", "normal.npy"]
    # Failed scenes leave nothing behind, no temporaries either.
    assert sorted(p.name for p in (out / "train").iterdir()) == ["scene0000_00", "scene0001_00"]

    # Statistics, counted by hand: train chair 4 + 12, wall 4; val table 16.
    stats = json.loads((out / "stats.json").read_text())
    assert stats["class_names"] == list(NAMES)
    train = stats["splits"]["train"]
    expected_points = [0] * 200
    expected_points[CHAIR], expected_points[WALL] = 16, 4
    expected_scenes = [0] * 200
    expected_scenes[CHAIR], expected_scenes[WALL] = 2, 1
    assert train["class_point_counts"] == expected_points and train["class_scene_counts"] == expected_scenes
    assert train["num_scenes"] == 2 and train["num_points"] == 32 and train["num_ignored_points"] == 12
    assert train["imbalance_factor"] == 4.0 and train["num_classes_present"] == 2
    val = stats["splits"]["val"]
    assert val["class_point_counts"][TABLE] == 16 and sum(val["class_point_counts"]) == 16 and val["imbalance_factor"] == 1.0
    assert stats["splits"]["test"] == {"num_scenes": 1, "num_points": 16}


def test_axis_alignment_by_hand(tmp_path):
    # 90 degrees about x, then translate by (1, 2, 3): (x, y, z) -> (x + 1, 2 - z, y + 3); normal +z -> -y.
    axis = np.array([[1, 0, 0, 1], [0, 0, -1, 2], [0, 1, 0, 3], [0, 0, 0, 1]], dtype=float)
    raw = make_release(tmp_path / "raw", train=["scene0000_00"])
    v, _, _ = write_grid_scene(raw / "scans", "scene0000_00", axis=axis)
    preprocess_scannet200(raw, tmp_path / "plain", progress=False)
    preprocess_scannet200(raw, tmp_path / "aligned", align=True, progress=False)
    plain = np.load(tmp_path / "plain" / "train" / "scene0000_00" / "coord.npy", allow_pickle=False)
    aligned = np.load(tmp_path / "aligned" / "train" / "scene0000_00" / "coord.npy", allow_pickle=False)
    np.testing.assert_array_equal(plain, v.astype(np.float32))
    np.testing.assert_allclose(aligned, np.stack([v[:, 0] + 1, 2 - v[:, 2], v[:, 1] + 3], axis=1), atol=1e-6)
    normal = np.load(tmp_path / "aligned" / "train" / "scene0000_00" / "normal.npy", allow_pickle=False)
    np.testing.assert_allclose(normal, np.tile([0, -1, 0], (16, 1)), atol=1e-6)


def test_idempotent_rerun_and_overwrite(tmp_path):
    raw = make_release(tmp_path / "raw", train=["scene0000_00", "scene0001_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    write_grid_scene(raw / "scans", "scene0001_00")
    out = tmp_path / "data"
    first = preprocess_scannet200(raw, out, progress=False)
    stats_first = (out / "stats.json").read_text()
    coord = out / "train" / "scene0000_00" / "coord.npy"
    stamp = coord.stat().st_mtime_ns

    again = preprocess_scannet200(raw, out, progress=False)
    assert first.done == ["scene0000_00", "scene0001_00"] and again.done == []
    assert again.skipped == ["scene0000_00", "scene0001_00"] and again.ok
    assert coord.stat().st_mtime_ns == stamp
    assert (out / "stats.json").read_text() == stats_first  # skipped scenes still counted

    (out / "train" / "scene0001_00" / "instance.npy").unlink()  # an incomplete folder is redone
    partial = preprocess_scannet200(raw, out, progress=False)
    assert partial.done == ["scene0001_00"] and partial.skipped == ["scene0000_00"]

    redone = preprocess_scannet200(raw, out, overwrite=True, progress=False)
    assert redone.done == ["scene0000_00", "scene0001_00"] and redone.skipped == []
    assert (out / "stats.json").read_text() == stats_first
    assert sorted(p.name for p in (out / "train").iterdir()) == ["scene0000_00", "scene0001_00"]

    # A finished scene needs no raw files; with --overwrite its missing folder is a failure.
    shutil.rmtree(raw / "scans" / "scene0000_00")
    assert preprocess_scannet200(raw, out, progress=False).skipped == ["scene0000_00", "scene0001_00"]
    forced = preprocess_scannet200(raw, out, overwrite=True, progress=False)
    assert forced.failed == {"scene0000_00": "scene0000_00: scans/scene0000_00: missing folder"}
    assert (out / "train" / "scene0000_00" / "coord.npy").is_file()  # the old folder is kept


def test_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    raw = make_release(tmp_path / "raw", train=["scene0000_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    calls = []

    def save_then_fail(file, arr, allow_pickle=True):
        calls.append(file)
        if len(calls) == 3:
            raise OSError("disk full")
        with open(file, "wb") as fh:
            fh.write(b"x")

    monkeypatch.setattr(np, "save", save_then_fail)
    summary = preprocess_scannet200(raw, tmp_path / "data", progress=False)
    assert "disk full" in summary.failed["scene0000_00"] and len(calls) == 3
    assert list((tmp_path / "data" / "train").iterdir()) == []


def test_two_workers_match_one(tmp_path):
    scenes = [f"scene{k:04d}_00" for k in range(4)]
    raw = make_release(tmp_path / "raw", train=scenes)
    for k, s in enumerate(scenes):
        write_grid_scene(raw / "scans", s, offset=k)
    _break("malformed JSON", raw / "scans" / scenes[2], scenes[2])
    one = preprocess_scannet200(raw, tmp_path / "one", workers=1, progress=False)
    two = preprocess_scannet200(raw, tmp_path / "two", workers=2, progress=False)
    assert one.done == two.done == [scenes[0], scenes[1], scenes[3]]
    assert one.failed == two.failed and set(two.failed) == {scenes[2]}
    for s in two.done:
        for name in ("coord", "color", "normal", "segment200", "instance"):
            a = np.load(tmp_path / "one" / "train" / s / f"{name}.npy", allow_pickle=False)
            b = np.load(tmp_path / "two" / "train" / s / f"{name}.npy", allow_pickle=False)
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert (tmp_path / "one" / "stats.json").read_text() == (tmp_path / "two" / "stats.json").read_text()


def test_missing_test_root_is_skipped_and_no_release_raises(tmp_path):
    raw = make_release(tmp_path / "raw", train=["scene0000_00"], test=["scene0707_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    summary = preprocess_scannet200(raw, tmp_path / "data", progress=False)
    assert summary.ok and summary.missing_splits == ["test"] and "scans_test/ is absent" in summary.report()
    with pytest.raises(FileNotFoundError, match="not a ScanNet v2 release"):
        preprocess_scannet200(tmp_path / "nothing", tmp_path / "data2", progress=False)


def test_tool_reports_failures_and_exit_status(tmp_path):
    raw = make_release(tmp_path / "raw", train=["scene0000_00", "scene0001_00"], val=["scene0002_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    write_grid_scene(raw / "scans", "scene0001_00")
    _break("segIndices length", raw / "scans" / "scene0001_00", "scene0001_00")
    write_grid_scene(raw / "scans", "scene0002_00")
    out = tmp_path / "data"
    cmd = [sys.executable, str(REPO / "tools" / "preprocess_scannet200.py"), "--raw", str(raw), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 1, proc.stderr
    assert "scenes done: 2, skipped (already finished): 0, failed: 1" in proc.stdout
    assert "vertices with an unknown raw category (ignored): 8" in proc.stdout
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
    assert failed == ["FAILED scene0001_00: scene0001_00_vh_clean_2.0.010000.segs.json: segIndices has 15 entries but the mesh has 16 vertices"]
    assert (out / "val" / "scene0002_00" / "segment200.npy").is_file()
