"""Collapse statistics against closed forms and a stored-features numpy reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pointseg.analysis.collapse import METRIC_NAMES, CollapseAccumulator, nc1

REPO = Path(__file__).resolve().parents[1]


def etf_vertices(k: int, d: int, seed: int = 0) -> np.ndarray:
    """(K, D) simplex ETF: unit rows, pairwise cosine −1/(K−1), summing to 0."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))
    return (math.sqrt(k / (k - 1)) * basis @ (np.eye(k) - 1.0 / k)).T


def points_at(means: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    feat = np.concatenate([np.repeat(m[None], n, axis=0) for m, n in zip(means, counts)])
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    return feat, labels


def test_etf_means_give_zero_angle_metrics_and_zero_nc1():
    k, d = 6, 10
    etf = etf_vertices(k, d)
    offset = np.linspace(-3, 5, d)  # a global shift that centering must remove
    feat, labels = points_at(3.0 * etf + offset, [50, 1, 7, 300, 2, 9])  # imbalanced counts
    acc = CollapseAccumulator(k, d)
    acc.process(feat, labels)
    res = acc.evaluate(classifier_weight=etf * np.arange(1, k + 1)[:, None], weighting="class")  # row norms don't matter
    assert res["num_classes_measured"] == k and res["etf_cosine"] == pytest.approx(-1 / (k - 1))
    for name in METRIC_NAMES:
        assert res["overall"][name] == pytest.approx(0.0, abs=1e-9), name
    # The paper's point-weighted global mean (the default) is pulled to the big classes: the same
    # ETF looks skewed.
    skewed = acc.evaluate()["overall"]
    assert skewed["equiangular_means"] > 0.1 and skewed["maxangle_means"] > 0.1


def test_hand_built_three_class_example():
    means = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    acc = CollapseAccumulator(3, 2)
    acc.process(*points_at(means, [2, 3, 4]))
    res = acc.evaluate(classifier_weight=np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 1.0]]), weighting="class")["overall"]
    # μ_G = mean of the class means = (0, 1/3); centered means (1, −1/3), (0, 2/3), (−1, −1/3):
    # cos12 = cos23 = −1/√10, cos13 = −4/5.
    a, b = -1 / math.sqrt(10), -0.8
    mean = (2 * a + b) / 3
    std = math.sqrt((2 * (a - mean) ** 2 + (b - mean) ** 2) / 3)
    assert res["equiangular_means"] == pytest.approx(std)
    assert res["maxangle_means"] == pytest.approx((2 * abs(a + 0.5) + abs(b + 0.5)) / 3)
    # Classifier rows (1,0), (0,1), (−1,1)/√2: cosines 0, −1/√2, 1/√2.
    c = [0.0, -1 / math.sqrt(2), 1 / math.sqrt(2)]
    assert res["equiangular_classifier"] == pytest.approx(float(np.std(c)))
    assert res["maxangle_classifier"] == pytest.approx(float(np.mean(np.abs(np.array(c) + 0.5))))
    assert res["nc1"] == pytest.approx(0.0, abs=1e-12)  # every point sits on its mean
    assert res["num_classes"] == 3 and res["num_points"] == 9


def random_features(seed: int, n: int = 600, k: int = 5, d: int = 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, k, n)  # includes ignored points
    centers = rng.normal(size=(k, d)) * 3
    feat = centers[np.maximum(labels, 0)] + rng.normal(size=(n, d)) * rng.uniform(0.2, 2, size=(k, 1))[
        np.maximum(labels, 0)
    ] + 100.0  # a large offset: naive Σxxᵀ − nμμᵀ would lose digits
    return feat, labels, k, d


def test_streaming_in_chunks_equals_one_pass_and_merge():
    feat, labels, k, d = random_features(1)
    one = CollapseAccumulator(k, d)
    one.process(feat, labels)
    chunked = CollapseAccumulator(k, d)
    for idx in np.array_split(np.arange(len(labels)), [1, 7, 100, 101, 350]):
        chunked.process(torch.from_numpy(feat[idx]), torch.from_numpy(labels[idx]))
    left, right = CollapseAccumulator(k, d), CollapseAccumulator(k, d)
    left.process(feat[:250], labels[:250])
    right.process(feat[250:], labels[250:])
    left.merge(right)
    for acc in (chunked, left):
        np.testing.assert_array_equal(acc.count, one.count)
        np.testing.assert_allclose(acc.mean, one.mean, rtol=1e-12)
        np.testing.assert_allclose(acc.scatter, one.scatter, rtol=1e-9)
        assert acc.evaluate()["overall"]["nc1"] == pytest.approx(one.evaluate()["overall"]["nc1"], rel=1e-9)


@pytest.mark.parametrize("weighting", ["class", "point"])
def test_nc1_matches_numpy_reference_from_stored_features(weighting):
    feat, labels, k, d = random_features(2)
    acc = CollapseAccumulator(k, d)
    acc.process(feat, labels)
    x, y = feat[labels >= 0], labels[labels >= 0]
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    if weighting == "class":
        mu_g = means.mean(0)
        sigma_w = np.mean([np.cov(x[y == c].T, bias=True) for c in range(k)], axis=0)
    else:
        mu_g = x.mean(0)
        sigma_w = (x - means[y]).T @ (x - means[y]) / len(y)
    sigma_b = (means - mu_g).T @ (means - mu_g) / k
    expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / k
    got = acc.evaluate(weighting=weighting)["overall"]["nc1"]
    assert got == pytest.approx(expected, rel=1e-8)
    assert got > 0


def test_groups_use_pairs_inside_the_group_and_missing_classes():
    feat, labels, _, d = random_features(3, k=5)
    labels = np.where(labels == 4, 5, labels)  # class 4 absent, class 5 present; K = 7
    acc = CollapseAccumulator(7, d)
    acc.process(feat, labels)
    w = np.random.default_rng(0).normal(size=(7, d))
    groups = {
        "head": np.array([1, 1, 1, 0, 0, 0, 0], bool),
        "common": np.array([0, 0, 0, 1, 1, 0, 0], bool),  # only class 3 present
        "tail": np.array([0, 0, 0, 0, 0, 1, 1], bool),  # only class 5 present
    }
    res = acc.evaluate(classifier_weight=w, groups=groups, weighting="class")
    assert res["classes"] == [0, 1, 2, 3, 5]
    assert res["common"]["num_classes"] == 1 and res["common"]["nc1"] is None
    assert res["tail"]["equiangular_means"] is None
    # Head pairs: recompute from the overall centering (μ_G over the 5 present classes).
    present = [0, 1, 2, 3, 5]
    z = acc.mean[present] - acc.mean[present].mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    cos = [z[i] @ z[j] for i in range(3) for j in range(3) if i != j]
    assert res["head"]["equiangular_means"] == pytest.approx(float(np.std(cos)))
    assert res["head"]["maxangle_means"] == pytest.approx(float(np.mean(np.abs(np.array(cos) + 1 / 4))))
    wn = w[[0, 1, 2]] / np.linalg.norm(w[[0, 1, 2]], axis=1, keepdims=True)
    cw = [wn[i] @ wn[j] for i in range(3) for j in range(3) if i != j]
    assert res["head"]["equiangular_classifier"] == pytest.approx(float(np.std(cw)))
    json.dumps(res)  # plain JSON types only


def test_nc1_function_ignores_null_space_of_sigma_b():
    sigma_b = np.diag([2.0, 0.5, 0.0])
    sigma_w = np.diag([1.0, 1.0, 7.0])  # spread along Σ_B's null space does not count
    assert nc1(sigma_w, sigma_b, 2) == pytest.approx((1 / 2 + 1 / 0.5) / 2)


def test_bad_input_is_rejected():
    acc = CollapseAccumulator(3, 2)
    with pytest.raises(ValueError, match="feat must be"):
        acc.process(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="labels have"):
        acc.process(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="labels must be in"):
        acc.process(np.zeros((2, 2)), np.array([0, 3]))
    acc.process(np.zeros((2, 2)), np.array([0, -1]))
    with pytest.raises(ValueError, match="at least two classes"):
        acc.evaluate()
    acc.process(np.ones((1, 2)), np.array([1]))
    with pytest.raises(ValueError, match="classifier_weight must be"):
        acc.evaluate(classifier_weight=np.zeros((2, 2)))


# ---------------------------------------------------------------- feeding checkpoints' features
from pointseg.analysis.collapse import center_space_metrics  # noqa: E402
from pointseg.analysis.collapse_run import (  # noqa: E402
    accumulate,
    checkpoint_iteration,
    write_collapse_report,
)


class FakeSegmentor(torch.nn.Module):
    """Eval-mode stand-in: features are a fixed linear map of the inputs."""

    def __init__(self, c_in: int, d: int, k: int):
        super().__init__()
        self.proj = torch.nn.Linear(c_in, d, dtype=torch.float64)
        self.classifier = torch.nn.Linear(d, k, dtype=torch.float64)

    def forward(self, batch):
        feat = self.proj(batch["feat"])
        return {"feat": feat, "logits": self.classifier(feat)}


def test_accumulate_streams_model_features_like_one_pass():
    torch.manual_seed(0)
    k, d = 4, 3
    model = FakeSegmentor(5, d, k).eval()
    g = torch.Generator().manual_seed(1)
    batches = [
        {"feat": torch.randn(n, 5, generator=g, dtype=torch.float64), "segment": torch.randint(-1, k, (n,), generator=g)}
        for n in (30, 1, 55)
    ]
    acc = accumulate(model, batches, k, d, progress=False)
    with torch.no_grad():
        feat = torch.cat([model(b)["feat"] for b in batches])
    ref = CollapseAccumulator(k, d)
    ref.process(feat, torch.cat([b["segment"] for b in batches]))
    np.testing.assert_allclose(acc.scatter, ref.scatter, rtol=1e-10)
    np.testing.assert_array_equal(acc.count, ref.count)
    with pytest.raises(KeyError, match="segment"):
        accumulate(model, [{"feat": batches[0]["feat"]}], k, d, progress=False)


def test_center_space_metrics_of_centers_on_their_etf_columns():
    from pointseg.losses.ceco import simplex_etf

    k, d = 7, 12
    etf = simplex_etf(k, d, alpha=5.0, seed=1, dtype=torch.float64).numpy()  # (d, K)
    acc = CollapseAccumulator(k, d)
    acc.process(*points_at(2.0 * etf.T, [40, 1, 3, 500, 2, 9, 11]))
    res = center_space_metrics(acc, None, lambda x: x, etf)
    for name in ("equiangular_means", "maxangle_means", "equiangular_classifier", "maxangle_classifier"):
        assert res["overall"][name] == pytest.approx(0.0, abs=1e-9), name
    assert res["overall"]["alignment"] == pytest.approx(1.0) and res["overall"]["nc1"] is None
    # One center rotated onto its neighbour's column: alignment drops by exactly 1 − cos/K.
    feat, labels = points_at(2.0 * etf.T, [40, 1, 3, 500, 2, 9, 11])
    feat[labels == 0] = 2.0 * etf[:, 1]
    moved = CollapseAccumulator(k, d)
    moved.process(feat, labels)
    got = center_space_metrics(moved, None, lambda x: x, etf)["overall"]["alignment"]
    assert got == pytest.approx(1 - (1 + 1 / (k - 1)) / k)


def test_center_space_angles_are_shifted_by_the_etf_of_all_its_classes():
    """With 4 of K = 9 ETF classes present, centers on their columns have cosine −1/(K−1) = −1/8,
    not −1/3: the metrics must read 0 distance to the ETF angle, and say which K they use."""
    from pointseg.losses.ceco import simplex_etf

    k, d = 9, 12
    etf = simplex_etf(k, d, alpha=1.0, seed=3, dtype=torch.float64).numpy()
    acc = CollapseAccumulator(k, d)
    present = [0, 2, 5, 7]
    counts = [50 if c in present else 0 for c in range(k)]
    acc.process(*points_at(etf.T, counts))
    res = center_space_metrics(acc, None, lambda x: x, etf)
    assert res["num_classes_measured"] == 4 and res["num_classes_etf"] == k
    assert res["etf_cosine"] == pytest.approx(-1 / (k - 1))
    assert res["overall"]["maxangle_means"] == pytest.approx(0.0, abs=1e-9)
    assert res["overall"]["maxangle_classifier"] == pytest.approx(0.0, abs=1e-9)


def test_center_space_reduce_equals_the_branch_batchnorm_on_all_points():
    """The closed-form BatchNorm of the analysis equals running the released head's reduce + BN
    in training mode on all points at once, then pooling and embedding."""
    from pointseg.analysis.collapse_run import center_space
    from pointseg.losses.ceco import CenterCollapseLoss, center_pool

    feat, labels, k, d = random_features(0, k=5, d=6)
    branch = CenterCollapseLoss(d, k, reduce_dim=8, proj_dim=16, dropout=0.0).double()
    acc = CollapseAccumulator(k, d)
    acc.process(feat, labels)
    got = center_space(branch, acc, None)
    branch.train()
    with torch.no_grad():
        x = torch.from_numpy(feat[labels >= 0])
        centers, _, _ = center_pool(branch.point_embedding(x), torch.from_numpy(labels[labels >= 0]), k)
        e = branch.center_embedding(centers).numpy()
    ref = center_space_metrics(acc, None, lambda _: e, branch.classifier_weight().numpy())
    assert got["overall"]["equiangular_means"] == pytest.approx(ref["overall"]["equiangular_means"], rel=1e-6)
    assert got["overall"]["alignment"] == pytest.approx(ref["overall"]["alignment"], rel=1e-6)


def test_report_json_png_and_checkpoint_iteration(tmp_path):
    torch.save({"model": {}, "iteration": 1200, "config": {}}, tmp_path / "ckpt.pth")
    assert checkpoint_iteration(tmp_path / "ckpt.pth") == 1200
    feat, labels, k, d = random_features(4)
    acc = CollapseAccumulator(k, d)
    records = []
    for i, idx in enumerate(np.array_split(np.arange(len(labels)), 3)):
        acc.process(feat[idx], labels[idx])
        groups = {"head": np.arange(k) < 3, "tail": np.arange(k) >= 3}
        records.append({"checkpoint": f"c{i}", "iteration": 100 * i, "metrics": acc.evaluate(np.eye(k, d), groups)})
    json_path, png_path = write_collapse_report(records, tmp_path / "out")
    saved = json.loads(json_path.read_text())["checkpoints"]
    assert [r["iteration"] for r in saved] == [0, 100, 200]
    assert saved[2]["metrics"]["overall"]["nc1"] == pytest.approx(acc.evaluate()["overall"]["nc1"])
    png = png_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# ---------------------------------------------------------------- the tool on a real checkpoint
from engine_helpers import make_tiny_run  # noqa: E402


@pytest.mark.slow
def test_collapse_tool_on_checkpoints(tmp_path):
    from pointseg.cli import collapse as tool

    _, ckpts, seg = make_tiny_run(tmp_path)
    out = str(tmp_path / "out")
    assert tool.main(["--split", "val", "--out", out, "--checkpoint", *map(str, ckpts), "model.backend=torch"]) == 0
    records = json.loads((tmp_path / "out" / "collapse.json").read_text())["checkpoints"]
    assert [r["iteration"] for r in records] == [100, 200]
    assert records[0]["metrics"]["classes"] == sorted(set(seg[seg >= 0].tolist()))
    # Classifier metrics come from the point classifier's weight of each checkpoint.
    w = torch.load(ckpts[1], weights_only=True)["model"]["classifier.weight"].double().numpy()
    present = records[1]["metrics"]["classes"]
    wn = w[present] / np.linalg.norm(w[present], axis=1, keepdims=True)
    cos = (wn @ wn.T)[~np.eye(len(present), dtype=bool)]
    assert records[1]["metrics"]["overall"]["equiangular_classifier"] == pytest.approx(float(cos.std()))
    assert (tmp_path / "out" / "collapse.png").stat().st_size > 10_000
    # A baseline run is measured in the default CeCo head's space too, over the same classes.
    center = records[1]["center_metrics"]
    assert center["classes"] == present and center["overall"]["equiangular_classifier"] == pytest.approx(0, abs=1e-6)
    # ... which is the shared space every run is also measured in: the same numbers for a baseline.
    assert records[1]["center_metrics_shared"] == center


def test_shared_center_space_is_the_released_head_whatever_the_run_head():
    """An Eq. 4 run (no reduce) is measured in its own space and in the released head's: the
    shared branch has the released reduce and the same ETF as a baseline's default branch."""
    from pointseg.analysis.collapse_run import center_branch_for, shared_center_branch
    from pointseg.engine.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "synthetic"
    eq4 = load_config(root / "ceco_paper_eq4.yaml", ["model.backend=torch"])
    base = load_config(root / "baseline.yaml", ["model.backend=torch"])
    own = center_branch_for({}, eq4, 48)  # no stored branch: rebuilt from ceco.etf_seed
    shared, reference = shared_center_branch(eq4, 48), center_branch_for({}, base, 48)
    assert own.reduce is None and shared.reduce is not None
    assert torch.equal(shared.classifier_weight(), reference.classifier_weight())
    assert torch.equal(shared.reduce.weight, reference.reduce.weight)


def test_classifier_cosines_raw_and_centered():
    """Rows of an ETF plus a common vector: the raw cosines hide the frame, the centered ones are
    exactly −1/(K−1) (a shared component changes no softmax prediction)."""
    k, d = 6, 9
    etf = etf_vertices(k, d)
    rows = 2.0 * etf + np.linspace(1, 2, d)  # a common component in every row
    acc = CollapseAccumulator(k, d)
    acc.process(*points_at(etf, [5] * k))
    res = acc.evaluate(classifier_weight=rows, groups={"tail": np.arange(k) >= 3})["classifier_cosine"]
    assert res["raw"]["overall"] > 0.3
    assert res["centered"]["overall"] == pytest.approx(-1 / (k - 1))
    assert res["centered"]["tail"] == pytest.approx(-1 / (k - 1))
