"""ScanNet v2's 20 classes from raw scans: ``segment20.npy`` against an oracle computed here from
the tsv's ``nyu40id`` column, and preprocess → train → evaluate → submit with ``data.dataset:
scannet20`` on tiny synthetic scans."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import tiny_config
from raw_helpers import UNKNOWN_LABEL, make_release, write_grid_scene

from pointseg.cli.preprocess import main as preprocess_main
from pointseg.preprocessing.preprocess import preprocess_scannet200

TSV = Path(__file__).resolve().parents[1] / "datasets" / "scannet200" / "scannetv2-labels.combined.tsv"
VALID_CLASS_IDS_20 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]

# Groups per scene (grid rows 0..3 are segments 100..103): valid NYU40 classes (couch → sofa,
# kitchen counter → counter), NYU40 ids outside the 20 (ceiling 22, shelf 15, pillow 18), an
# unknown raw category, a row in no group, and a later group overwriting an earlier one.
GROUPS = {
    "scene0000_00": [
        {"id": 0, "segments": [100], "label": "chair"},
        {"id": 1, "segments": [101], "label": "ceiling"},
        {"id": 2, "segments": [102], "label": "couch"},
    ],
    "scene0001_00": [
        {"id": 0, "segments": [100, 101], "label": "bathtub"},
        {"id": 1, "segments": [101, 102], "label": "shower curtain"},  # overwrites row 1
        {"id": 2, "segments": [103], "label": UNKNOWN_LABEL},
    ],
    "scene0002_00": [
        {"id": 0, "segments": [100], "label": "kitchen counter"},
        {"id": 1, "segments": [101], "label": "shelf"},
        {"id": 2, "segments": [102], "label": "pillow"},
        {"id": 3, "segments": [103], "label": "wall"},
    ],
}


def oracle_nyu40() -> dict[str, int]:
    """raw_category → nyu40id, first row wins, read without pointseg."""
    lines = [ln for ln in TSV.read_bytes().decode("utf-8").replace("\r", "\n").split("\n") if ln.strip()]
    header = lines[0].split("\t")
    raw_col, nyu_col = header.index("raw_category"), header.index("nyu40id")
    table: dict[str, int] = {}
    for ln in lines[1:]:
        cells = ln.split("\t")
        table.setdefault(cells[raw_col], int(cells[nyu_col]))
    return table


def oracle_segment20(groups: list[dict]) -> list[int]:
    nyu = oracle_nyu40()
    row_label = [-1] * 4
    for g in groups:  # file order, later groups overwrite
        nyu_id = nyu.get(g["label"], 0)
        cls = VALID_CLASS_IDS_20.index(nyu_id) if nyu_id in VALID_CLASS_IDS_20 else -1
        for seg in g["segments"]:
            row_label[seg - 100] = cls
    return [label for label in row_label for _ in range(4)]  # 4 vertices per grid row


def _release(tmp_path: Path) -> Path:
    raw = make_release(tmp_path / "raw", train=["scene0000_00", "scene0001_00"], val=["scene0002_00"], test=["scene0707_00"])
    for scene, groups in GROUPS.items():
        write_grid_scene(raw / "scans", scene, groups=groups)
    write_grid_scene(raw / "scans_test", "scene0707_00", labelled=False)
    return raw


def test_oracle_covers_valid_ignored_and_overwritten_labels():
    assert oracle_segment20(GROUPS["scene0000_00"]) == [4] * 4 + [-1] * 4 + [5] * 4 + [-1] * 4
    assert oracle_segment20(GROUPS["scene0001_00"])[:12] == [18] * 4 + [15] * 8


def test_segment20_matches_the_nyu40_oracle(tmp_path, capsys):
    raw = _release(tmp_path)
    out = tmp_path / "data"
    assert preprocess_main(["--raw", str(raw), "--out", str(out), "--dataset", "scannet20", "--no-progress"]) == 0
    for scene, groups in GROUPS.items():
        split = "val" if scene == "scene0002_00" else "train"
        folder = out / split / scene
        assert sorted(p.name for p in folder.iterdir()) == ["color.npy", "coord.npy", "instance.npy", "normal.npy", "segment20.npy"]
        seg = np.load(folder / "segment20.npy", allow_pickle=False)
        assert seg.dtype == np.int16 and seg.tolist() == oracle_segment20(groups), scene
    assert sorted(p.name for p in (out / "test" / "scene0707_00").iterdir()) == ["color.npy", "coord.npy", "normal.npy"]
    stats = json.loads((out / "stats_scannet20.json").read_text())
    expected = np.zeros(20, np.int64)
    for scene in ("scene0000_00", "scene0001_00"):
        labels = np.array(oracle_segment20(GROUPS[scene]))
        expected += np.bincount(labels[labels >= 0], minlength=20)
    assert stats["splits"]["train"]["class_point_counts"] == expected.tolist()
    assert not (out / "stats.json").exists()


def test_one_pass_writes_both_and_adding_a_dataset_keeps_the_other(tmp_path):
    raw = _release(tmp_path)
    both = preprocess_scannet200(raw, tmp_path / "both", progress=False, datasets=("scannet200", "scannet20"))
    assert both.ok and (tmp_path / "both" / "stats.json").is_file() and (tmp_path / "both" / "stats_scannet20.json").is_file()
    later = tmp_path / "later"
    preprocess_scannet200(raw, later, progress=False)
    again = preprocess_scannet200(raw, later, progress=False, datasets=("scannet20",))
    assert sorted(again.done) == ["scene0000_00", "scene0001_00", "scene0002_00"]  # the test scene was finished
    for folder in (tmp_path / "both" / "train" / "scene0001_00", later / "train" / "scene0001_00"):
        assert np.load(folder / "segment20.npy").tolist() == oracle_segment20(GROUPS["scene0001_00"])
        assert (folder / "segment200.npy").is_file()
    np.testing.assert_array_equal(np.load(later / "val" / "scene0002_00" / "segment200.npy"),
                                  np.load(tmp_path / "both" / "val" / "scene0002_00" / "segment200.npy"))
    with pytest.raises(ValueError, match="cannot be labelled from raw scans"):
        preprocess_scannet200(raw, tmp_path / "x", progress=False, datasets=("scannet200[3]",))


@pytest.mark.usefixtures("tiny_backbone")
def test_scannet20_preprocess_train_evaluate_submit(tmp_path):
    from pointseg.data.dataset import build_dataset
    from pointseg.engine.ensemble import load_ensemble
    from pointseg.engine.trainer import Trainer
    from pointseg.evaluation.tester import evaluate_split

    raw = _release(tmp_path)
    data = tmp_path / "data"
    assert preprocess_scannet200(raw, data, progress=False, datasets=("scannet20",)).ok
    cfg = tiny_config(data, iterations=2, val_every=2, save_every=2)
    cfg.data.dataset = "scannet20"
    cfg.ceco.enabled = False
    with pytest.raises(ValueError, match="model.num_classes is 200 but dataset 'scannet20' has 20 classes"):
        Trainer(cfg, tmp_path / "wrong")
    cfg.model.num_classes = 20
    summary = Trainer(cfg, tmp_path / "run").train()
    assert summary["iteration"] == 2

    models, ecfg = load_ensemble([tmp_path / "run" / "checkpoints" / "last.pth"])
    val = build_dataset(ecfg.data, "val", mode="test", fragments=True)
    result = evaluate_split(models, val, tmp_path / "val", num_classes=20, progress=False)
    assert result.ok
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics["dataset"] == "scannet20" and len(metrics["per_class"]) == 20
    assert metrics["per_class"][11]["name"] == "counter" and metrics["per_class"][11]["gt_points"] == 4
    assert metrics["num_points"] == 8  # kitchen counter and wall rows; shelf and pillow are ignored

    test = build_dataset(ecfg.data, "test", mode="test", fragments=True)
    result = evaluate_split(models, test, tmp_path / "test", num_classes=20, raw=raw, progress=False)
    assert result.ok and result.submission_problems == []
    with zipfile.ZipFile(result.submission) as zf:
        assert zf.namelist() == ["scene0707_00.txt"]
        ids = [int(v) for v in zf.read("scene0707_00.txt").decode().split()]
    assert len(ids) == 16 and set(ids) <= set(VALID_CLASS_IDS_20)
