"""SemSegMetric against hand-computed confusion matrices and IoUs (ScanNet's semantic-label rule)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pointseg import meta
from pointseg.evaluation.metrics import SemSegMetric, summarize
from pointseg.evaluation.report import format_table, plot_per_class_iou, write_metrics_json


def test_hand_computed_three_classes() -> None:
    # K = 3. gt / pred per point:
    #   gt 0: pred 0, 0, 1          -> tp0 2, fn0 1 (fp1 1)
    #   gt 1: pred 1, -1 (invalid)  -> tp1 1, fn1 1 (miss, no fp)
    #   gt 2: pred 7 (invalid)      -> fn2 1
    #   gt -1: pred 0 (ignored), gt 5 (not a class): pred 1 (ignored)
    gt = np.array([0, 0, 0, 1, 1, 2, -1, 5])
    pred = np.array([0, 0, 1, 1, -1, 7, 0, 1])
    m = SemSegMetric(num_classes=3)
    m.process(pred, gt)
    expected = np.array(
        [
            [2, 1, 0, 0],
            [0, 1, 0, 1],
            [0, 0, 0, 1],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(m.confusion, expected)
    r = m.evaluate()
    iou = [c["iou"] for c in r["per_class"]]
    # class 0: tp 2, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: 0/1 -> 0
    assert iou == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert [c["acc"] for c in r["per_class"]] == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert [c["gt_points"] for c in r["per_class"]] == [3, 2, 1]
    assert r["all_acc"] == pytest.approx(3 / 6)
    assert r["num_points"] == 6


def test_absent_class_is_nan_and_left_out_of_mean() -> None:
    # K = 4: class 3 never in gt and never predicted -> NaN; class 2 not in gt but predicted -> 0.
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    r = SemSegMetric(num_classes=4)
    r.process(pred, gt)
    out = r.evaluate()
    iou = np.array([c["iou"] for c in out["per_class"]])
    np.testing.assert_allclose(iou[:3], [1 / 2, 1.0, 0.0])
    assert math.isnan(iou[3])
    assert math.isnan(out["per_class"][3]["acc"]) and math.isnan(out["per_class"][2]["acc"])
    assert out["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert out["miou_absent_as_zero"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    assert out["num_classes_evaluated"] == 3


def test_split_means_over_classes_with_an_iou() -> None:
    table = meta.class_table()
    masks = table.split_masks
    head = np.flatnonzero(masks["head"])[:2]
    common = np.flatnonzero(masks["common"])[:1]
    # head[0] perfect (IoU 1); head[1] half predicted as common[0]; tail never seen -> NaN.
    gt = np.array([head[0]] * 4 + [head[1]] * 4)
    pred = np.array([head[0]] * 4 + [head[1]] * 2 + [common[0]] * 2)
    m = SemSegMetric()
    m.process(pred, gt)
    r = m.evaluate()
    assert r["head_miou"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["common_miou"] == pytest.approx(0.0)  # predicted, absent from gt: fp only
    assert math.isnan(r["tail_miou"])
    assert r["miou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert r["miou_absent_as_zero"] == pytest.approx(1.5 / 200)
    row = r["per_class"][int(head[1])]
    assert row["scannet_id"] == int(table.scannet_id[head[1]]) and row["split"] == "head"
    assert row["name"] == table.name[head[1]]


def test_process_in_pieces_equals_one_call_and_accepts_torch() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(-2, 202, 5000)
    pred = rng.integers(-3, 205, 5000)
    whole = SemSegMetric()
    whole.process(pred, gt)
    parts = SemSegMetric()
    for sl in np.array_split(np.arange(5000), 7):
        # mixed containers and dtypes, as the trainer (tensors) and the tester (arrays) pass them
        parts.process(torch.from_numpy(pred[sl]).to(torch.int32), gt[sl].astype(np.int16))
    np.testing.assert_array_equal(whole.confusion, parts.confusion)
    # oracle: a plain loop over points
    ref = np.zeros((201, 201), np.int64)
    for g, p in zip(gt.tolist(), pred.tolist()):
        if 0 <= g < 200:
            ref[g, p if 0 <= p < 200 else 200] += 1
    np.testing.assert_array_equal(whole.confusion, ref)
    parts.reset()
    assert parts.confusion.sum() == 0


def test_rejects_bad_input() -> None:
    m = SemSegMetric(num_classes=3)
    with pytest.raises(TypeError, match="pred"):
        m.process(np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match="entries"):
        m.process(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        summarize(np.zeros((3, 4)))


def test_all_reduce_without_distributed_is_noop() -> None:
    m = SemSegMetric(num_classes=2)
    m.process(np.array([0, 1]), np.array([0, 0]))
    before = m.confusion.copy()
    m.all_reduce()
    np.testing.assert_array_equal(m.confusion, before)


def test_report_json_table_and_plot(tmp_path) -> None:
    m = SemSegMetric()
    m.process(np.array([0, 0, 5]), np.array([0, 1, 5]))
    r = m.evaluate()
    write_metrics_json(tmp_path / "metrics.json", r)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["miou"] == pytest.approx(r["miou"])
    assert data["per_class"][2]["iou"] is None  # NaN -> null
    assert set(data["per_class"][0]) == {"index", "scannet_id", "name", "split", "iou", "acc", "gt_points"}
    text = format_table(r)
    assert "wall" in text and "miou_absent_as_zero" in text
    plot_per_class_iou(r, tmp_path / "per_class_iou.png")
    assert (tmp_path / "per_class_iou.png").read_bytes()[:4] == b"\x89PNG"


def _reduce_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rng = np.random.default_rng(5)
    gt, pred = rng.integers(-1, 200, 4000), rng.integers(-1, 201, 4000)
    m = SemSegMetric()
    m.process(pred[rank::world], gt[rank::world])  # each process sees its own shard
    m.all_reduce()
    if rank == 0:
        np.save(out_file, m.confusion)
    dist.destroy_process_group()


def test_all_reduce_sums_over_processes(tmp_path) -> None:
    torch.multiprocessing.spawn(
        _reduce_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "conf.npy")), nprocs=2
    )
    rng = np.random.default_rng(5)
    gt, pred = rng.integers(-1, 200, 4000), rng.integers(-1, 201, 4000)
    m = SemSegMetric()
    m.process(pred, gt)
    np.testing.assert_array_equal(np.load(tmp_path / "conf.npy", allow_pickle=False), m.confusion)
