"""Vertex prediction: order through voxelization, fragments, TTA and ensemble voting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointseg.data.transforms import build_transforms, default_test_transforms
from pointseg.evaluation.inference import (
    TTAView,
    apply_view,
    predict_scene,
    sample_fragments,
    tta_views,
    vote,
)

K = 6
VOXEL = 0.1


def _scene(n: int = 3000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    coord = rng.uniform(0, 1.0, (n, 3)).astype(np.float32)  # ~1000 voxels, several points each
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return {"coord": coord, "color": rng.uniform(0, 255, (n, 3)).astype(np.float32), "normal": normal}


def _colour_feat(data: dict) -> np.ndarray:
    return data["color"] / 255.0 - 0.5


def _pipeline(use_fragments: bool = True):
    """The dataset's real test pipeline (colour features, test-mode voxelization), with or
    without fragments as ``build_dataset(..., fragments=...)`` builds it."""
    items = default_test_transforms(VOXEL, ["color"])
    items[-1]["fragments"] = use_fragments
    return build_transforms(items)


def view_fragments(data: dict, use_fragments: bool = True) -> list[dict]:
    return sample_fragments(_pipeline(use_fragments)(apply_view(data, TTAView()), None))


W = torch.tensor(np.random.default_rng(7).normal(size=(3, K)), dtype=torch.float32)
V = torch.tensor(np.random.default_rng(8).normal(size=(K,)), dtype=torch.float32)


class PointwiseModel(torch.nn.Module):
    """Stand-in whose logits are a known function of the voxel's representative colour and its z cell."""

    def __init__(self, use_z: bool = True) -> None:
        super().__init__()
        self.use_z = use_z

    def forward(self, batch: dict) -> dict:
        coords, feat = batch["coords"], batch["feat"]
        assert coords.dtype == torch.int32 and coords.shape[1] == 4 and bool((coords[:, 0] == 0).all())
        logits = 4 * feat @ W
        if self.use_z:
            logits = logits + 0.3 * coords[:, 3:4].float() * V
        return {"logits": logits, "feat": feat}


def _expected_prob(data: dict, use_z: bool = True) -> np.ndarray:
    """Independent oracle: softmax of the stand-in applied to each vertex's own colour and z cell."""
    logits = 4 * _colour_feat(data) @ W.numpy().astype(np.float64)
    if use_z:
        zcell = np.floor((data["coord"][:, 2] - data["coord"][:, 2].min()) / np.float32(VOXEL))
        logits = logits + 0.3 * zcell[:, None] * V.numpy()
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_every_vertex_predicted_from_its_own_representative() -> None:
    data = _scene()
    frags = view_fragments(data)
    assert len(frags) > 1  # voxels hold several points
    covered = np.zeros(len(data["coord"]), bool)
    for f in frags:
        covered[f["index"]] = True
    assert covered.all()
    prob = vote([PointwiseModel()], [frags], len(data["coord"]), K).numpy()
    np.testing.assert_allclose(prob, _expected_prob(data), rtol=1e-4, atol=1e-6)
    # without fragments a vertex gets its voxel's (lowest-index representative's) prediction instead
    single = view_fragments(data, use_fragments=False)
    prob1 = vote([PointwiseModel()], [single], len(data["coord"]), K).numpy()
    # oracle: the lowest-index point of each voxel represents it
    cell = np.floor((data["coord"] - data["coord"].min(0)) / np.float32(VOXEL)).astype(np.int64)
    _, first, inv = np.unique(cell, axis=0, return_index=True, return_inverse=True)
    rep = first[inv.reshape(-1)]
    np.testing.assert_allclose(prob1, _expected_prob(data)[rep], rtol=1e-4, atol=1e-6)
    assert not np.array_equal(rep, np.arange(len(rep)))
    # predict_scene is the same path
    torch.testing.assert_close(predict_scene([PointwiseModel()], data, _pipeline(), num_classes=K), torch.from_numpy(prob).float())


def test_tta_with_rotation_invariant_model_equals_no_tta() -> None:
    data = _scene(seed=1)
    n = len(data["coord"])
    model = PointwiseModel(use_z=True)  # colour and z cell: unchanged by rotations about z
    plain = vote([model], [view_fragments(data)], n, K)
    tta = predict_scene([model], data, _pipeline(), tta_views(4), num_classes=K)
    torch.testing.assert_close(tta, plain, rtol=1e-4, atol=1e-6)
    # the views really differ: a model that reads x does not give the same answer
    xmodel = lambda b: {"logits": b["coords"][:, 1:2].float() * V}  # noqa: E731
    x_plain = predict_scene([xmodel], data, _pipeline(), num_classes=K)
    x_tta = predict_scene([xmodel], data, _pipeline(), tta_views(4), num_classes=K)
    assert not torch.allclose(x_plain, x_tta, atol=1e-3)


def test_tta_views_and_apply_view() -> None:
    views = tta_views(4, scales=(0.9, 1.1))
    assert len(views) == 8
    assert [v.angle for v in views[:4]] == pytest.approx([0, math.pi / 2, math.pi, 3 * math.pi / 2])
    data = {"coord": np.array([[0, 0, 1], [2, 0, 3], [2, 2, 0]], np.float32), "normal": np.eye(3, dtype=np.float32)}
    out = apply_view(data, TTAView(math.pi / 2, 2.0))
    # centre (1, 1): (0,0) -> rel (-1,-1) -> rot (1,-1) -> scaled (2,-2) -> (3,-1); z scaled about 0
    np.testing.assert_allclose(out["coord"][0], [3, -1, 2], atol=1e-6)
    np.testing.assert_allclose(out["normal"][0], [0, 1, 0], atol=1e-6)  # rotated, not scaled
    np.testing.assert_array_equal(data["coord"][0], [0, 0, 1])  # input untouched
    with pytest.raises(ValueError):
        tta_views(0)


class ConstantModel(torch.nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, batch: dict) -> dict:
        m = batch["coords"].shape[0]
        return {"logits": self.logits.expand(m, -1), "feat": batch["feat"]}


def test_ensemble_averages_probabilities_not_logits() -> None:
    data = _scene(200, seed=2)
    frags = view_fragments(data)
    models = [ConstantModel([20.0, 0.0, 0.0]), ConstantModel([0.0, 2.0, 0.0]), ConstantModel([0.0, 2.0, 0.0])]
    prob = vote(models, [frags], len(data["coord"]), 3).numpy()
    e2 = math.exp(2)
    pa = [1 / (1 + 2 * math.exp(-20)), math.exp(-20) / (1 + 2 * math.exp(-20)), math.exp(-20) / (1 + 2 * math.exp(-20))]
    pb = [1 / (e2 + 2), e2 / (e2 + 2), 1 / (e2 + 2)]
    expected = [(pa[i] + 2 * pb[i]) / 3 for i in range(3)]  # ≈ (0.404, 0.525, 0.071)
    np.testing.assert_allclose(prob, np.tile(expected, (len(prob), 1)), rtol=1e-5)
    assert (prob.argmax(1) == 1).all()  # averaging logits (6.7, 1.3, 0) would pick class 0


def test_vote_checks_its_input() -> None:
    data = _scene(100)
    frags = view_fragments(data)
    with pytest.raises(ValueError, match="logits"):
        vote([ConstantModel([0.0, 1.0])], [frags], 100, 3)
    with pytest.raises(ValueError, match="not predicted"):
        vote([ConstantModel([0.0, 1.0, 2.0])], [frags[:1]], 100, 3)
    with pytest.raises(ValueError, match="not voxelized in test mode"):
        sample_fragments(build_transforms([{"name": "NormalizeColor"}])(apply_view(data, TTAView()), None))


# ---- end to end: tools/test.py on a tiny preprocessed dataset with tiny real checkpoints ----

import json  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

from pointseg import meta  # noqa: E402
from pointseg.evaluation.metrics import SemSegMetric  # noqa: E402
from pointseg.evaluation.submission import read_submission  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _write_scene(folder: Path, n: int, seed: int, labelled: bool) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    # sparse at 0.1 m voxels: about two fragments, so few forward passes
    np.save(folder / "coord.npy", rng.uniform(0, 3.0, (n, 3)).astype(np.float32))
    np.save(folder / "color.npy", rng.integers(0, 256, (n, 3), dtype=np.uint8))
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    np.save(folder / "normal.npy", normal / np.linalg.norm(normal, axis=1, keepdims=True))
    if labelled:
        seg = rng.integers(0, 5, n).astype(np.int16)  # any integer dtype on disk
        seg[:10] = -1
        np.save(folder / "segment200.npy", seg)


def _checkpoint(path: Path, data_root: Path, seed: int) -> None:
    from pointseg.engine.checkpoint import save_checkpoint
    from pointseg.engine.config import load_config, to_plain_dict
    from pointseg.models.segmentor import build_segmentor

    cfg = load_config(
        ROOT / "configs/synthetic/ceco.yaml",
        [f"data.root={data_root}", "model.backend=torch", "data.voxel_size=0.1", "ceco.prior=none"],
    )
    torch.manual_seed(seed)
    model = build_segmentor(cfg, train=True)  # a training model: its center branch is stripped on load
    save_checkpoint({"format": 2, "model": model.state_dict(), "config": to_plain_dict(cfg), "iteration": 0}, path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    data = tmp / "data"
    for i, name in enumerate(["scene0011_00", "scene0015_00"]):
        _write_scene(data / "val" / name, 300 + 50 * i, i, labelled=True)
    for i, name in enumerate(["scene0707_00", "scene0708_00"]):
        _write_scene(data / "test" / name, 250 + 40 * i, 10 + i, labelled=False)
    ckpts = [tmp / "a.pth", tmp / "b.pth"]
    for i, c in enumerate(ckpts):
        _checkpoint(c, data, seed=i)
    from pointseg.cli import evaluate as tool

    return tmp, data, ckpts, tool


def test_tool_val_metrics_match_saved_predictions(tiny_run) -> None:
    tmp, data, ckpts, tool = tiny_run
    out = tmp / "val_out"
    rc = tool.main(["--checkpoint", *map(str, ckpts), "--split", "val", "--out", str(out), "--save-predictions"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "head_miou", "common_miou", "tail_miou", "miou_absent_as_zero", "per_class"):
        assert key in metrics
    assert (out / "per_class_iou.png").is_file()
    conf = np.load(out / "confusion.npz", allow_pickle=False)["confusion"]
    # oracle: score the written submission-format files independently
    m = SemSegMetric()
    for scene in ("scene0011_00", "scene0015_00"):
        ids = np.loadtxt(out / "predictions" / f"{scene}.txt", dtype=np.int64)
        gt = np.load(data / "val" / scene / "segment200.npy", allow_pickle=False)
        assert ids.shape == gt.shape  # one line per vertex
        m.process(meta.class_table().to_index(ids), gt)
    np.testing.assert_array_equal(conf, m.confusion)
    assert conf.sum() == (300 - 10) + (350 - 10)
    assert metrics["miou"] == pytest.approx(m.evaluate()["miou"], nan_ok=True)


def _raw_meshes(raw: Path, counts: dict[str, int]) -> Path:
    from plyfile import PlyData, PlyElement

    for scene, n in counts.items():
        v = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
        (raw / "scans_test" / scene).mkdir(parents=True, exist_ok=True)
        PlyData([PlyElement.describe(v, "vertex")]).write(str(raw / "scans_test" / scene / f"{scene}_vh_clean_2.ply"))
    (raw / "scannetv2_test.txt").write_text("\n".join(counts) + "\n")
    return raw


def test_tool_test_split_writes_valid_submission(tiny_run, capsys) -> None:
    tmp, data, ckpts, tool = tiny_run
    out = tmp / "test_out"
    # validated against the meshes: one mesh here has a vertex more than its scene folder
    raw = _raw_meshes(tmp / "raw_bad", {"scene0707_00": 250, "scene0708_00": 291})
    rc = tool.main(["--checkpoint", str(ckpts[0]), "--split", "test", "--out", str(out), "--save-predictions",
                    "--tta", "2", "--no-fragments", "--raw", str(raw)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "scene0708_00: 290 lines but the mesh has 291 vertices" in err
    good = _raw_meshes(tmp / "raw_good", {"scene0707_00": 250, "scene0708_00": 290})
    from pointseg.cli import validate_submission as validate_tool

    assert validate_tool.main([str(out / "submission.zip"), "--raw", str(good)]) == 0
    assert not (out / "metrics.json").exists()
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist()) == ["scene0707_00.txt", "scene0708_00.txt"]
    sub = read_submission(out / "submission.zip")
    for scene, n in (("scene0707_00", 250), ("scene0708_00", 290)):
        assert sub[scene].shape == (n,)
        np.testing.assert_array_equal(sub[scene], np.loadtxt(out / "predictions" / f"{scene}.txt", dtype=np.int64))


def test_tool_reports_failed_scene(tiny_run, capsys) -> None:
    tmp, data, ckpts, tool = tiny_run
    bad = tmp / "bad_data"
    _write_scene(bad / "val" / "scene0011_00", 200, 0, labelled=True)
    (bad / "val" / "scene0999_00").mkdir(parents=True)
    np.save(bad / "val" / "scene0999_00" / "coord.npy", np.zeros((5, 2), np.float32))  # wrong shape
    rc = tool.main(["--checkpoint", str(ckpts[0]), "--split", "val", "--out", str(tmp / "bad_out"),
                    "--no-fragments", f"data.root={bad}"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "scene0999_00" in err and "coord.npy" in err
    assert json.loads((tmp / "bad_out" / "metrics.json").read_text())["failed_scenes"] == ["scene0999_00"]
