"""Dataset specs: the name → spec table, ScanNet v2's 20 classes, class subsets remapped on load,
the class-count check, and metrics / submissions / statistics taking their facts from the spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from engine_helpers import CLASSES, read_jsonl, tiny_config

from pointseg import meta
from pointseg.data.dataset import build_dataset
from pointseg.data.scene import load_scene
from pointseg.data.stats import load_class_counts, write_stats
from pointseg.datasets import DATASETS, check_num_classes, get_dataset, spec_of, subset
from pointseg.engine.config import load_config
from pointseg.engine.trainer import Trainer
from pointseg.evaluation.metrics import SemSegMetric, summarize
from pointseg.evaluation.submission import format_prediction, read_submission, validate_submission, write_submission
from pointseg.synthetic import longtail
from pointseg.utils.io import save_npy

ROOT = Path(__file__).resolve().parents[1]

# ScanNet v2 benchmark (BenchmarkScripts util: VALID_CLASS_IDS / CLASS_LABELS), typed here.
VALID_CLASS_IDS_20 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
CLASS_LABELS_20 = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
]


def test_table_names_the_datasets_and_scannet200_is_the_meta_tables():
    assert set(DATASETS) == {"scannet200", "scannet20"}
    s = DATASETS["scannet200"]
    table = meta.class_table()
    assert s.num_classes == 200 and s.label_file == "segment200.npy" and s.stats_file == "stats.json"
    assert s.names == table.name and s.groups == table.split and s.group_names == ("head", "common", "tail")
    np.testing.assert_array_equal(s.ids, table.scannet_id)
    np.testing.assert_array_equal(s.colors, table.color)
    assert spec_of({}) is s and spec_of({"dataset": "scannet20"}) is DATASETS["scannet20"]


def test_scannet20_table():
    s = DATASETS["scannet20"]
    assert s.num_classes == 20 and s.label_file == "segment20.npy" and s.id_name == "nyu40id"
    assert s.ids.tolist() == VALID_CLASS_IDS_20 and list(s.names) == CLASS_LABELS_20
    assert s.groups == () and s.group_masks == {}
    assert s.colors.shape == (20, 3) and s.colors[0].tolist() == [174, 199, 232]  # wall as in ScanNet's palette


def test_check_num_classes_names_both_numbers():
    check_num_classes(DATASETS["scannet20"], 20)
    with pytest.raises(ValueError, match=r"model.num_classes is 200 but dataset 'scannet20' has 20 classes") as e:
        check_num_classes(DATASETS["scannet20"], 200)
    assert "\n" not in str(e.value)


def test_build_dataset_checks_num_classes_and_unknown_dataset(tmp_path):
    (tmp_path / "train" / "scene0000_00").mkdir(parents=True)
    with pytest.raises(ValueError, match="model.num_classes is 200 but dataset 'scannet20' has 20"):
        build_dataset({"root": str(tmp_path), "dataset": "scannet20"}, "train", "train", num_classes=200)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_dataset("nope")
    with pytest.raises(ValueError, match=r"\['sofa'\] are not classes of 'scannet200'"):
        get_dataset("scannet200", ["wall", "sofa"])


def _scene(folder: Path, files: dict[str, np.ndarray]) -> Path:
    n = len(next(iter(files.values())))
    save_npy(folder / "coord.npy", np.arange(3 * n, dtype=np.float32).reshape(n, 3))
    save_npy(folder / "color.npy", np.zeros((n, 3), np.uint8))
    save_npy(folder / "normal.npy", np.tile(np.float32([0, 0, 1]), (n, 1)))
    for name, arr in files.items():
        save_npy(folder / name, arr)
    return folder


def test_scene_loads_the_dataset_label_file(tmp_path):
    folder = _scene(tmp_path / "s", {"segment200.npy": np.array([0, 5, -1], np.int16),
                                     "segment20.npy": np.array([19, -1, 3], np.int16)})
    assert load_scene(folder)["segment"].tolist() == [0, 5, -1]
    assert load_scene(folder, DATASETS["scannet20"])["segment"].tolist() == [19, -1, 3]
    save_npy(folder / "segment20.npy", np.array([20, 0, 0], np.int16))
    with pytest.raises(ValueError, match=r"segment20.npy: labels must be class indices 0..19"):
        load_scene(folder, DATASETS["scannet20"])


def _subset20_classes() -> list[str]:
    return yaml.safe_load((ROOT / "configs" / "longtail" / "subset20.yaml").read_text())["data"]["classes"]


def test_longtail_subset_config_keeps_the_benchmark_classes():
    cfg = yaml.safe_load((ROOT / "configs" / "longtail" / "subset20.yaml").read_text())
    assert cfg["data"]["classes"] == [c.name for c in longtail.CLASSES]
    loaded = load_config(ROOT / "configs" / "longtail" / "subset20.yaml")
    assert loaded.model.num_classes == 20  # derived from data.classes at load
    eq4 = load_config(ROOT / "configs" / "longtail" / "ceco_paper_eq4_subset20.yaml")
    assert (eq4.model.num_classes, eq4.ceco.head, eq4.ceco.projection) == (20, "paper_eq4", "none")


def test_subset_remaps_on_load_and_inherits_groups_and_ids(tmp_path):
    classes = _subset20_classes()
    spec = get_dataset("scannet200", classes)
    table = meta.class_table()
    idx = {n: i for i, n in enumerate(table.name)}
    # Hand-built ScanNet200 labels: kept classes, classes outside the subset, ignore.
    file_labels = np.array([idx["wall"], idx["chair"], idx["toaster oven"], -1, idx["bucket"], idx["floor"], idx["sofa chair"]])
    expected = [0, -1, 19, -1, 12, 1, -1]
    folder = _scene(tmp_path / "train" / "scene0000_00", {"segment200.npy": file_labels.astype(np.int16)})
    assert load_scene(folder, spec)["segment"].tolist() == expected
    ds = build_dataset({"root": str(tmp_path), "classes": classes, "test_transforms": []}, "train", "val", num_classes=20)
    assert ds.spec.num_classes == 20 and ds[0]["segment"].tolist() == expected
    assert spec.groups == ("head",) * 5 + ("common",) * 7 + ("tail",) * 8
    assert spec.ids.tolist() == [int(table.scannet_id[idx[c]]) for c in classes]
    assert format_prediction(np.array([0, 19]), spec) == f"{table.scannet_id[idx['wall']]}\n{table.scannet_id[idx['toaster oven']]}\n"
    # a subset of the subset still reads the ScanNet200 file
    two = subset(spec, ["bucket", "wall"])
    assert two.to_classes(file_labels).tolist() == [1, -1, -1, -1, 0, -1, -1]


def test_subset_counts_are_the_parents_of_the_kept_classes(tmp_path):
    table = meta.class_table()
    idx = {n: i for i, n in enumerate(table.name)}
    _scene(tmp_path / "train" / "a", {"segment200.npy": np.array([idx["wall"]] * 3 + [idx["chair"]] * 2, np.int16),
                                      "instance.npy": np.zeros(5, np.int32)})
    _scene(tmp_path / "train" / "b", {"segment200.npy": np.array([idx["bucket"], idx["wall"]], np.int16),
                                      "instance.npy": np.zeros(2, np.int32)})
    write_stats(tmp_path, {"train": ["a", "b"]}, ["train"])
    counts = load_class_counts(tmp_path, "train", 3, spec=get_dataset("scannet200", ["bucket", "wall", "floor"]))
    assert counts.points.tolist() == [1, 4, 0] and counts.scenes.tolist() == [1, 2, 0]


def test_metrics_name_scannet20_classes_for_k_20():
    # Hand-computed: class 0 (wall): tp 2, fn 1 (predicted 4); class 4 (chair): tp 1, fp 1; others absent.
    gt = np.array([0, 0, 0, 4, -1, 7])
    pred = np.array([0, 0, 4, 4, 19, -1])
    m = SemSegMetric(20, DATASETS["scannet20"])
    m.process(pred, gt)
    out = m.evaluate()
    assert out["dataset"] == "scannet20" and out["groups"] == [] and "head_miou" not in out
    rows = out["per_class"]
    assert [r["name"] for r in rows] == CLASS_LABELS_20 and [r["scannet_id"] for r in rows] == VALID_CLASS_IDS_20
    assert rows[0]["iou"] == pytest.approx(2 / 3) and rows[4]["iou"] == pytest.approx(1 / 2) and rows[7]["iou"] == 0.0
    assert out["miou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3) and out["num_classes_evaluated"] == 3
    with pytest.raises(ValueError, match="21 classes but dataset 'scannet20' has 20"):
        summarize(np.zeros((22, 22), np.int64), DATASETS["scannet20"])
    # K = 200 without a spec is still ScanNet200
    assert summarize(np.zeros((201, 201), np.int64))["groups"] == ["head", "common", "tail"]


def test_scannet20_submission_holds_nyu40_ids(tmp_path):
    spec = DATASETS["scannet20"]
    assert format_prediction(np.array([0, 19, 5, 12]), spec) == "1\n39\n6\n14\n"
    path = write_submission(tmp_path / "s.zip", {"scene0707_00": np.arange(20)}, spec)
    assert read_submission(path, spec)["scene0707_00"].tolist() == VALID_CLASS_IDS_20
    assert validate_submission(path, {"scene0707_00": 20}, spec) == []
    # NYU40 ids are not all ScanNet200 ids: the ScanNet200 check rejects those that are not
    assert not set(VALID_CLASS_IDS_20) <= set(meta.class_table().scannet_id.tolist())
    problems = validate_submission(path, {"scene0707_00": 20}, DATASETS["scannet200"])
    assert problems and "not a ScanNet200 class id" in problems[0]
    with pytest.raises(ValueError, match="not a class index 0..19"):
        format_prediction(np.array([20]), spec)


def test_scannet20_stats_file(tmp_path):
    _scene(tmp_path / "train" / "a", {"segment20.npy": np.array([0, 0, 19, -1], np.int16), "instance.npy": np.zeros(4, np.int32)})
    path = write_stats(tmp_path, {"train": ["a"]}, ["train"], spec=DATASETS["scannet20"])
    assert path.name == "stats_scannet20.json"
    stats = json.loads(path.read_text())
    assert stats["dataset"] == "scannet20" and stats["nyu40ids"] == VALID_CLASS_IDS_20
    assert stats["splits"]["train"]["class_point_counts"] == [2] + [0] * 18 + [1]
    counts = load_class_counts(tmp_path, "train", 20, spec=DATASETS["scannet20"])
    assert counts.points.tolist() == [2] + [0] * 18 + [1]


def test_predict_names_classes_of_the_checkpoints_dataset():
    from pointseg.engine.predictor import UNLABELLED_ID, class_counts

    rows = class_counts(np.array([39, 1, 39, UNLABELLED_ID]), DATASETS["scannet20"])
    # most points first, then by id (the unlabelled id 0 before wall's 1)
    assert rows == [{"id": 39, "name": "otherfurniture", "points": 2}, {"id": UNLABELLED_ID, "name": "unlabelled", "points": 1},
                    {"id": 1, "name": "wall", "points": 1}]


@pytest.mark.usefixtures("tiny_backbone")
def test_a_class_subset_trains_and_validates_in_its_own_label_space(data_root, tmp_path):
    names = [meta.class_table().name[i] for i in CLASSES[:3]]
    cfg = tiny_config(data_root, iterations=2, val_every=2, save_every=2)
    cfg.data.classes = names
    cfg.ceco.enabled = False
    with pytest.raises(ValueError, match=r"model.num_classes is 200 but dataset 'scannet200\[3\]' has 3 classes"):
        Trainer(cfg, tmp_path / "wrong")
    cfg.model.num_classes = 3
    trainer = Trainer(cfg, tmp_path / "run")
    labels = np.concatenate([trainer.train_set[i]["segment"] for i in range(len(trainer.train_set))])
    assert set(np.unique(labels).tolist()) == {-1, 0, 1, 2}  # the two other classes are ignored
    trainer.train()
    val = read_jsonl(tmp_path / "run" / "val.jsonl")
    assert len(val) == 1 and 0.0 <= val[0]["miou"] <= 1.0


def test_instance_pasting_refuses_another_label_space(tmp_path):
    (tmp_path / "train" / "scene0000_00").mkdir(parents=True)
    paste = [{"name": "PasteTailInstances"}, {"name": "NormalizeColor"}, {"name": "ToFeature"}, {"name": "Voxelize"}]
    with pytest.raises(ValueError, match="PasteTailInstances pastes ScanNet200 instances; it cannot train dataset 'scannet20'"):
        build_dataset({"root": str(tmp_path), "dataset": "scannet20", "train_transforms": paste}, "train", "train")
