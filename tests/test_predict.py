"""pointseg-predict end to end with a tiny real checkpoint: a scan in another frame, units and
colour encoding is labelled exactly as in ScanNet's; outputs, summary, missing colour, NaN points,
ensembles; and bad scans or checkpoints end in one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import TINY, MinkUNetTiny, tiny_config
from plyfile import PlyData
from test_scan_io import write_ply

from pointseg import meta
from pointseg.cli import predict as tool
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.engine.config import to_plain_dict
from pointseg.models import BACKBONES
from pointseg.models.segmentor import build_segmentor

CHUNKED = ["--max-voxels", "700", "--overlap", "0.3", "--no-progress"]


def room_metres(n: int = 2400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3 × 2 × 2 m corner with a box, coordinates exact binary fractions (k / 64 m) so that a
    millimetre copy converts back without rounding; 8-bit colours by surface."""
    rng = np.random.default_rng(seed)
    m = n // 4
    parts = [
        np.c_[rng.integers(0, 192, m), rng.integers(0, 128, m), np.zeros(m)],
        np.c_[rng.integers(0, 192, m), np.zeros(m), rng.integers(0, 128, m)],
        np.c_[np.zeros(m), rng.integers(0, 128, m), rng.integers(0, 128, m)],
        rng.integers([64, 40, 0], [128, 90, 50], (n - 3 * m, 3)),
    ]
    coord = (np.concatenate(parts) / 64).astype(np.float32)
    base = np.repeat(np.array([[200, 190, 170], [90, 120, 200], [90, 120, 200], [150, 40, 30]]), [m, m, m, n - 3 * m], axis=0)
    color = np.clip(base + rng.integers(-20, 20, (n, 3)), 0, 255).astype(np.uint8)
    return coord, color


def make_checkpoint(path: Path, features: tuple[str, ...] = ("color",)) -> Path:
    """An untrained tiny MinkUNet saved as training saves it (with its center branch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BACKBONES, TINY, MinkUNetTiny)
        cfg = tiny_config(Path("unused"))
        cfg.ceco.prior = "none"  # no training scenes to count
        cfg.data.features, cfg.model.in_channels = list(features), 3 * len(features)
        torch.manual_seed(0)
        model = build_segmentor(cfg, train=True)
    save_checkpoint({"format": 2, "model": model.state_dict(), "config": to_plain_dict(cfg), "iteration": 6}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def run(capsys, *args) -> tuple[int, str, str]:
    rc = tool.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(PlyData.read(str(path))["vertex"]["label"])


def test_y_up_millimetres_and_unit_colours_label_as_scannet(tmp_path, ckpt, tiny_backbone, capsys, caplog) -> None:
    coord, color = room_metres()
    write_ply(tmp_path / "scannet.ply", coord, color)
    exported = np.c_[coord[:, 0], coord[:, 2], -coord[:, 1]] * np.float32(1000)  # y-up, millimetres
    write_ply(tmp_path / "phone.ply", exported.astype(np.float32), (color / 255.0).astype(np.float32), color_dtype="f4")
    before = (tmp_path / "phone.ply").read_bytes()
    rc, _, err = run(capsys, tmp_path / "scannet.ply", "--checkpoint", ckpt, "--out", tmp_path / "a", *CHUNKED)
    assert rc == 0, err
    rc, _, err = run(capsys, tmp_path / "phone.ply", "--checkpoint", ckpt, "--out", tmp_path / "b",
                     "--up", "y", "--units", "mm", *CHUNKED)
    assert rc == 0, err
    assert "check --units" not in caplog.text  # 3 m across in mm: no units warning
    a, b = labels_of(tmp_path / "a" / "scannet.labels.ply"), labels_of(tmp_path / "b" / "phone.labels.ply")
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) > 1
    out = PlyData.read(str(tmp_path / "b" / "phone.labels.ply"))["vertex"]
    np.testing.assert_array_equal(np.c_[out["x"], out["y"], out["z"]], exported)  # its own frame and units
    assert (tmp_path / "phone.ply").read_bytes() == before  # the input is untouched
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())["scans"][str(tmp_path / "scannet.ply")]
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())["scans"][str(tmp_path / "phone.ply")]
    assert sa["chunks"] > 1 and sa["largest_chunk_voxels"] <= 700
    assert sa["classes"] == sb["classes"] and (sa["color"], sb["color"]) == ("8-bit", "0-1 floats")
    # millimetres read as metres: warned
    rc, _, err = run(capsys, tmp_path / "phone.ply", "--checkpoint", ckpt, "--out", tmp_path / "c", "--up", "y",
                     "--no-progress")
    assert rc == 0 and "in --units mm it would be 2.98 m: check --units" in caplog.text


def test_outputs_and_summary(tmp_path, ckpt, tiny_backbone, capsys) -> None:
    coord, color = room_metres(1200, seed=1)
    np.save(tmp_path / "scan.npy", np.c_[coord, color])
    labels = {}
    for fmt in ("ply", "npy", "txt"):
        rc, out, err = run(capsys, tmp_path / "scan.npy", "--checkpoint", ckpt, "--out", tmp_path / "o", "--format", fmt,
                           "--no-progress")
        assert rc == 0, err
        path = tmp_path / "o" / f"scan.labels.{fmt}"
        assert f"written: {path}" in out
        if fmt == "ply":
            v = PlyData.read(str(path))["vertex"].data
        elif fmt == "npy":
            v = np.load(path, allow_pickle=False)
        else:
            t = np.loadtxt(path)
            v = {"x": t[:, 0], "y": t[:, 1], "z": t[:, 2], "red": t[:, 3], "green": t[:, 4], "blue": t[:, 5], "label": t[:, 6]}
        np.testing.assert_array_equal(np.c_[v["x"], v["y"], v["z"]], coord)
        labels[fmt] = np.asarray(v["label"]).astype(np.int64)
        table = meta.class_table()
        index = table.to_index(labels[fmt])
        assert index.min() >= 0  # every label is a ScanNet200 class id
        np.testing.assert_array_equal(np.c_[v["red"], v["green"], v["blue"]], table.color[index])
    np.testing.assert_array_equal(labels["ply"], labels["npy"])
    np.testing.assert_array_equal(labels["ply"], labels["txt"])
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    entry = summary["scans"][str(tmp_path / "scan.npy")]
    ids, counts = np.unique(labels["ply"], return_counts=True)
    assert {c["id"]: c["points"] for c in entry["classes"]} == dict(zip(ids.tolist(), counts.tolist()))
    assert {c["name"] for c in entry["classes"]} <= set(meta.class_table().name)
    assert entry["points"] == 1200 and entry["dropped_non_finite"] == 0 and entry["chunks"] == 1
    assert summary["voxel_size"] == 0.05 and summary["features"] == ["color"] and summary["failed"] == {}


def test_scan_without_colour(tmp_path, ckpt, tiny_backbone, capsys, caplog) -> None:
    coord, _ = room_metres(1000, seed=2)
    np.save(tmp_path / "bare.npy", coord)
    rc, _, err = run(capsys, tmp_path / "bare.npy", "--checkpoint", ckpt, "--out", tmp_path / "o", "--no-progress")
    assert rc == 1
    assert err.splitlines()[0] == (f"error: {tmp_path / 'bare.npy'}: the scan has no colour but the model was trained "
                                   "with colour input; give --no-color to predict from geometry alone (less accurate)")
    rc, _, err = run(capsys, tmp_path / "bare.npy", "--checkpoint", ckpt, "--out", tmp_path / "o", "--no-color",
                     "--no-progress")
    assert rc == 0 and "neutral grey (127.5)" in caplog.text and "accuracy will suffer" in caplog.text
    # what the model was fed: the same scan with every colour mid-grey
    np.save(tmp_path / "grey.npy", np.c_[coord, np.full((1000, 3), 127.5, np.float32)])
    rc, _, _ = run(capsys, tmp_path / "grey.npy", "--checkpoint", ckpt, "--out", tmp_path / "o", "--no-progress")
    assert rc == 0
    np.testing.assert_array_equal(labels_of(tmp_path / "o" / "bare.labels.ply"), labels_of(tmp_path / "o" / "grey.labels.ply"))


def test_non_finite_points_are_dropped_and_counted(tmp_path, ckpt, tiny_backbone, capsys, caplog) -> None:
    coord, color = room_metres(1000, seed=3)
    bad = np.zeros(1000, bool)
    bad[[5, 77, 500]] = True
    broken = coord.copy()
    broken[5, 0], broken[77, 2], broken[500] = np.nan, np.inf, np.nan
    write_ply(tmp_path / "holes.ply", broken, color)
    write_ply(tmp_path / "clean.ply", coord[~bad], color[~bad])
    rc, _, err = run(capsys, tmp_path / "holes.ply", tmp_path / "clean.ply", "--checkpoint", ckpt, "--out", tmp_path / "o",
                     "--no-progress")
    assert rc == 0 and "3 of 1000 points have non-finite values (NaN / inf) and are dropped" in caplog.text
    holes = labels_of(tmp_path / "o" / "holes.labels.ply")
    assert holes.shape == (1000,) and np.all(holes[bad] == 0)
    np.testing.assert_array_equal(holes[~bad], labels_of(tmp_path / "o" / "clean.labels.ply"))
    entry = json.loads((tmp_path / "o" / "summary.json").read_text())["scans"][str(tmp_path / "holes.ply")]
    assert entry["dropped_non_finite"] == 3
    assert {"id": 0, "name": "unlabelled", "points": 3} in entry["classes"]


def test_ensemble_and_tta(tmp_path, ckpt, tiny_backbone, capsys) -> None:
    coord, color = room_metres(800, seed=4)
    write_ply(tmp_path / "s.ply", coord, color)
    rc, _, _ = run(capsys, tmp_path / "s.ply", "--checkpoint", ckpt, "--out", tmp_path / "one", "--no-progress")
    assert rc == 0
    # an ensemble of one checkpoint twice votes as the checkpoint alone
    rc, out, _ = run(capsys, tmp_path / "s.ply", "--checkpoint", ckpt, "--checkpoint", ckpt, "--out", tmp_path / "two",
                     "--no-progress")
    assert rc == 0 and "2 model(s)" in out
    np.testing.assert_array_equal(labels_of(tmp_path / "one" / "s.labels.ply"), labels_of(tmp_path / "two" / "s.labels.ply"))
    rc, out, _ = run(capsys, tmp_path / "s.ply", "--checkpoint", ckpt, "--out", tmp_path / "tta", "--tta", "2",
                     *CHUNKED)
    assert rc == 0 and "2 view(s)" in out
    assert json.loads((tmp_path / "tta" / "summary.json").read_text())["tta_views"] == 2


def test_bad_scans_fail_in_one_line_and_the_others_go_on(tmp_path, ckpt, tiny_backbone, capsys) -> None:
    coord, color = room_metres(600, seed=5)
    write_ply(tmp_path / "good.ply", coord, color)
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "garbled.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\n"
                                           b"property float x\nproperty float y\nproperty float z\nend_header\n\0\0")
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    bad = {"empty.ply": "empty file", "garbled.ply": "cannot read PLY", "model.obj": "unsupported scan format '.obj'",
           "missing.ply": "scan not found"}
    rc, out, err = run(capsys, *(tmp_path / n for n in ["empty.ply", "garbled.ply", "good.ply", "model.obj", "missing.ply"]),
                       "--checkpoint", ckpt, "--out", tmp_path / "o", "--no-progress")
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for line, (name, problem) in zip(errors, bad.items()):
        assert line.startswith(f"error: {tmp_path / name}: ") and problem in line
    assert (tmp_path / "o" / "good.labels.ply").is_file()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert list(summary["scans"]) == [str(tmp_path / "good.ply")]
    assert sorted(summary["failed"]) == sorted(str(tmp_path / n) for n in bad)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good.labels.ply", "summary.json"]


def _only_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_checkpoints_fail_in_one_line(tmp_path, ckpt, tiny_backbone, capsys) -> None:
    coord, color = room_metres(500, seed=6)
    write_ply(tmp_path / "s.ply", coord, color)
    scan = ["--out", tmp_path / "o", "--no-progress", tmp_path / "s.ply"]
    stored = torch.load(ckpt, weights_only=True)
    torch.save({"state_dict": stored["model"]}, tmp_path / "other.pth")  # a plain state dict
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "other.pth", *scan)
    assert rc == 2 and _only_error(err).startswith(f"error: {tmp_path / 'other.pth'}: not a pointseg checkpoint")
    (tmp_path / "scan_as.pth").write_bytes((tmp_path / "s.ply").read_bytes())
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "scan_as.pth", *scan)
    assert rc == 2 and _only_error(err).startswith(f"error: {tmp_path / 'scan_as.pth'}: cannot load checkpoint")
    twenty = dict(stored, config=dict(stored["config"], model=dict(stored["config"]["model"], num_classes=20)))
    twenty["model"] = dict(stored["model"], **{k: v[:20] for k, v in stored["model"].items() if k.startswith("classifier.")})
    torch.save(twenty, tmp_path / "twenty.pth")
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "twenty.pth", *scan)
    assert rc == 2 and "predicts 20 classes" in _only_error(err) and "--label-map" in err
    # an older checkpoint without the voxel size in its config: refused, then read with --config
    old_cfg = json.loads(json.dumps(stored["config"]))
    del old_cfg["data"]["voxel_size"]
    torch.save(dict(stored, config=old_cfg), tmp_path / "old.pth")
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "old.pth", *scan)
    assert rc == 2 and _only_error(err) == (
        f"error: {tmp_path / 'old.pth'}: the checkpoint's stored config has no data.voxel_size (an older checkpoint?); "
        "give the config it was trained with: --config CONFIG.yaml")
    import yaml

    (tmp_path / "train.yaml").write_text(yaml.safe_dump(stored["config"]))
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "old.pth", "--config", tmp_path / "train.yaml", *scan)
    assert rc == 0, err


def test_outputs_never_replace_inputs_or_each_other(tmp_path, ckpt, tiny_backbone, capsys) -> None:
    coord, color = room_metres(300, seed=7)
    (tmp_path / "x").mkdir()
    write_ply(tmp_path / "a.ply", coord, color)
    write_ply(tmp_path / "x" / "a.ply", coord, color)
    rc, _, err = run(capsys, tmp_path / "a.ply", tmp_path / "x" / "a.ply", "--checkpoint", ckpt, "--out", tmp_path / "o")
    assert rc == 2 and "would write" in _only_error(err)
    write_ply(tmp_path / "b.labels.ply", coord, color)
    before = (tmp_path / "b.labels.ply").read_bytes()
    # b.ply's output would be b.labels.ply, another input of the same run
    rc, _, err = run(capsys, tmp_path / "a.ply", tmp_path / "b.labels.ply", tmp_path / "b.ply", "--checkpoint", ckpt,
                     "--out", tmp_path)
    assert rc == 2 and _only_error(err) == (
        f"error: {tmp_path / 'b.ply'}: its output {tmp_path / 'b.labels.ply'} is an input scan; choose another --out")
    assert (tmp_path / "b.labels.ply").read_bytes() == before and not (tmp_path / "a.labels.ply").exists()


def test_normals_of_a_mesh_feed_a_model_that_reads_them(tmp_path, tiny_backbone, capsys) -> None:
    from pointseg.preprocessing.normals import vertex_normals

    normal_ckpt = make_checkpoint(tmp_path / "normals.pth", ("color", "normal"))
    coord, color = room_metres(600, seed=8)
    faces = np.random.default_rng(0).integers(0, 600, (900, 3))
    write_ply(tmp_path / "mesh.ply", coord, color, faces=faces)
    # the same points with the normals written out (y-up, as the exporter would turn them)
    normal = vertex_normals(coord, faces)
    v = PlyData.read(str(tmp_path / "mesh.ply"))["vertex"].data
    fields = v.dtype.descr + [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    w = np.empty(len(v), dtype=fields)
    for name in v.dtype.names:
        w[name] = v[name]
    w["x"], w["y"], w["z"] = coord[:, 0], coord[:, 2], -coord[:, 1]
    w["nx"], w["ny"], w["nz"] = normal[:, 0], normal[:, 2], -normal[:, 1]
    from plyfile import PlyElement

    PlyData([PlyElement.describe(w, "vertex")]).write(str(tmp_path / "cloud_y_up.ply"))
    rc, _, err = run(capsys, tmp_path / "mesh.ply", "--checkpoint", normal_ckpt, "--out", tmp_path / "a", "--no-progress")
    assert rc == 0, err
    rc, _, err = run(capsys, tmp_path / "cloud_y_up.ply", "--checkpoint", normal_ckpt, "--out", tmp_path / "b", "--up", "y",
                     "--no-progress")
    assert rc == 0, err
    np.testing.assert_array_equal(labels_of(tmp_path / "a" / "mesh.labels.ply"), labels_of(tmp_path / "b" / "cloud_y_up.labels.ply"))
    write_ply(tmp_path / "bare.ply", coord, color)
    rc, _, err = run(capsys, tmp_path / "bare.ply", "--checkpoint", normal_ckpt, "--out", tmp_path / "c", "--no-progress")
    assert rc == 1 and err.splitlines()[0].startswith(f"error: {tmp_path / 'bare.ply'}: the model reads normals")
