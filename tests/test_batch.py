"""The batch contract: make_batch against a hand-written layout, and training collate and
prediction building the same batch from the same samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointseg.data.collate import collate, make_batch, to_device
from pointseg.data.transforms import build_transforms, default_test_transforms
from pointseg.evaluation.inference import fragment_batch, sample_fragments


def _samples() -> list[dict]:
    return [
        {
            "name": "a",
            "grid_coord": np.array([[0, 0, 0], [1, 2, 3]], np.int32),
            "feat": np.array([[1.0, 10.0], [2.0, 20.0]]),  # float64: the batch is float32
            "segment": np.array([0, -1], np.int32),  # int32: the batch is int64
            "inverse": np.array([0, 1, 1]),
        },
        {
            "name": "b",
            "grid_coord": np.array([[5, 5, 5]], np.int64),
            "feat": np.array([[3.0, 30.0]], np.float32),
            "segment": np.array([2]),
            "inverse": np.array([0, 0]),
        },
        {
            "grid_coord": np.array([[0, 1, 0], [0, 0, 1], [2, 2, 2]], np.int32),
            "feat": np.array([[4.0, 40.0], [5.0, 50.0], [6.0, 60.0]], np.float32),
            "segment": np.array([1, 1, -1]),
            "inverse": np.array([2, 0, 1]),
        },
    ]


def test_make_batch_matches_hand_written_layout():
    batch = make_batch(_samples())
    expected_coords = [[0, 0, 0, 0], [0, 1, 2, 3], [1, 5, 5, 5], [2, 0, 1, 0], [2, 0, 0, 1], [2, 2, 2, 2]]
    assert batch["coords"].dtype == torch.int32 and batch["coords"].is_contiguous()
    assert batch["coords"].tolist() == expected_coords
    assert batch["feat"].dtype == torch.float32
    assert batch["feat"].tolist() == [[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60]]
    assert batch["segment"].dtype == torch.int64 and batch["segment"].tolist() == [0, -1, 2, 1, 1, -1]
    assert batch["name"] == ["a", "b", "#2"]
    assert sorted(batch) == ["coords", "feat", "inverse", "name", "segment"]
    # Scene i's voxels are rows offset[i]..offset[i+1] (offsets 0, 2, 3, 6), and its points reach
    # their voxel's row through its own inverse plus that offset.
    scene = batch["coords"][:, 0]
    assert [int((scene == i).sum()) for i in range(3)] == [2, 1, 3]
    offsets = [0, 2, 3]
    rows = [(batch["inverse"][i] + offsets[i]).tolist() for i in range(3)]
    assert rows == [[0, 1, 1], [2, 2], [5, 3, 4]]
    # the point-level labels through those rows are each point's own voxel label
    assert [batch["segment"][r].tolist() for r in rows] == [[0, -1, -1], [2, 2], [-1, 1, 1]]


def test_make_batch_refuses_inconsistent_samples():
    samples = _samples()
    with pytest.raises(ValueError, match="empty batch"):
        make_batch([])
    del samples[1]["segment"]
    with pytest.raises(ValueError, match="only some scenes of the batch have 'segment'"):
        make_batch(samples)
    unlabelled = [{k: v for k, v in s.items() if k != "segment"} for s in samples]
    assert "segment" not in make_batch(unlabelled)  # a test split: no labels at all is fine
    with pytest.raises(ValueError, match="no 'feat'"):
        make_batch([{"grid_coord": np.zeros((1, 3), np.int32)}])


def test_collate_is_make_batch_of_the_scenes_within_budget():
    samples = _samples()
    for got, want in ((collate(samples), make_batch(samples)), (collate(samples, max_points=5), make_batch(samples[:2]))):
        _assert_same_batch(got, want)


def _assert_same_batch(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert len(a[key]) == len(b[key]), key
            for x, y in zip(a[key], b[key]):
                np.testing.assert_array_equal(x, y)


def _test_sample(fragments: bool) -> dict:
    rng = np.random.default_rng(0)
    n = 400
    data = {
        "coord": rng.uniform(0, 1.0, (n, 3)).astype(np.float32),
        "color": rng.uniform(0, 255, (n, 3)).astype(np.float32),
        "name": "scene",
    }
    items = default_test_transforms(0.1, ["color"])
    items[-1]["fragments"] = fragments
    return build_transforms(items)(data, None)


@pytest.mark.parametrize("fragments", [False, True])
def test_prediction_and_training_build_the_same_batch(fragments):
    frags = sample_fragments(_test_sample(fragments))
    assert len(frags) >= (2 if fragments else 1)
    for frag in frags:
        _assert_same_batch(fragment_batch(frag), collate([frag]))
    # several fragments in one training batch: scene i's rows are fragment i's own batch, batch
    # column aside
    batch = make_batch(frags)
    for i, frag in enumerate(frags):
        alone = fragment_batch(frag)
        rows = batch["coords"][:, 0] == i
        assert torch.equal(batch["coords"][rows, 1:], alone["coords"][:, 1:])
        assert torch.equal(batch["feat"][rows], alone["feat"])
        np.testing.assert_array_equal(alone["coords"][:, 1:].numpy(), frag["grid_coord"])


def test_to_device_moves_tensors_only():
    batch = make_batch(_samples())
    moved = to_device(batch, "meta")
    assert all(moved[k].device.type == "meta" for k in ("coords", "feat", "segment"))
    assert moved["name"] is batch["name"] and moved["inverse"] is batch["inverse"]
