"""The long-tail losses and their class statistics against hand-computed oracles: class priors and
class weights (inverse, inverse square root, effective number) of given counts, class-weighted CE
and focal loss, logit-adjusted CE and balanced softmax (value and closed-form gradient), absent
classes and the ignore label, and that configs using them build and train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import tiny_config

from pointseg.data.stats import ClassCounts, class_prior, class_weights
from pointseg.engine.config import load_config
from pointseg.losses import (
    LOSSES,
    BalancedSoftmaxLoss,
    CrossEntropyLoss,
    FocalLoss,
    LogitAdjustedLoss,
    build_criteria,
    check_losses,
    needs_class_counts,
)
from pointseg.losses.ceco import CenterCollapseLoss
from pointseg.models.segmentor import build_segmentor

ROOT = Path(__file__).resolve().parents[1]
# Three classes; class 2 never appears in training (no point, no scene).
COUNTS = ClassCounts(points=np.array([300, 100, 0]), scenes=np.array([4, 2, 0]), source="test")
# Three labelled points with softmax probabilities (rows) and one ignored point.
PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]], dtype=torch.float64)
TARGET = torch.tensor([0, 1, 0, -1])


# ---------------------------------------------------------------- priors and weights
def test_class_prior_by_points_and_scenes_with_the_absent_class_floor():
    # Absent class 2 counts as the rarest present class: points 100, scenes 2.
    assert class_prior(COUNTS, "points") == pytest.approx([300 / 500, 100 / 500, 100 / 500])
    assert class_prior(COUNTS, "scenes") == pytest.approx([4 / 8, 2 / 8, 2 / 8])
    assert class_prior(COUNTS, "points", absent="zero") == pytest.approx([0.75, 0.25, 0.0])
    assert class_prior([0.5, 0.25, 0.25]) == pytest.approx([0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="every class count is zero"):
        class_prior([0, 0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        class_prior([1, -1, 2])
    with pytest.raises(ValueError, match="'by' must be one of"):
        class_prior(COUNTS, "voxels")


def test_class_weights_by_hand():
    n = [100, 10, 0, 1]  # class 2 absent: weighted as the rarest (1 point)
    # inverse: 1/n = [0.01, 0.1, 1, 1]; Σ w n over the counted points = 1 + 1 + 0 + 1 = 3, Σ n = 111.
    assert class_weights(n, "inverse") == pytest.approx([0.37, 3.7, 37.0, 37.0])
    # inverse_sqrt: [0.1, 1/sqrt(10), 1, 1]; Σ w n = 10 + sqrt(10) + 1.
    s = 111 / (11 + math.sqrt(10))
    assert class_weights(n, "inverse_sqrt") == pytest.approx([0.1 * s, s / math.sqrt(10), s, s])
    # effective number, β = 0.9: (1 − β)/(1 − β^n).
    raw = [0.1 / (1 - 0.9**100), 0.1 / (1 - 0.9**10), 1.0, 1.0]
    scale = 111 / (100 * raw[0] + 10 * raw[1] + raw[3])
    got = class_weights(n, "effective_number", beta=0.9)
    assert got == pytest.approx([r * scale for r in raw], rel=1e-12)
    assert float(np.dot(got, n)) / 111 == pytest.approx(1.0)  # mean weight of a training point
    # β = 0: every class the same weight; β → 1: inverse frequency.
    assert class_weights(n, "effective_number", beta=0.0) == pytest.approx([1, 1, 1, 1])
    assert class_weights(n, "effective_number", beta=1 - 1e-9) == pytest.approx(class_weights(n, "inverse"), rel=1e-6)
    # Counts of scenes instead of points.
    assert class_weights(COUNTS, "inverse", by="scenes") == pytest.approx([1 / 4 * 3, 1 / 2 * 3, 1 / 2 * 3])
    with pytest.raises(ValueError, match="beta must be in"):
        class_weights(n, "effective_number", beta=1.0)
    with pytest.raises(ValueError, match="unknown scheme"):
        class_weights(n, "median_frequency")


def test_ceco_prior_goes_through_class_prior():
    """CeCo's released log prior is log(p + 1e-12) of the same normalization, absent classes at p = 0."""
    ceco = CenterCollapseLoss(8, 3, class_prior=COUNTS.scenes.tolist(), reduce_dim=0, projection="frozen", proj_dim=4)
    expect = torch.log(torch.tensor(class_prior(COUNTS, "scenes", absent="zero")) + 1e-12).float()
    assert torch.equal(ceco.log_prior, expect) and ceco.log_prior[2] == pytest.approx(math.log(1e-12))


# ---------------------------------------------------------------- weighted CE and focal
def test_weighted_cross_entropy_by_hand():
    logits = PROBS.log()
    # inverse point frequency of [300, 100, 0→100]: w ∝ [1/3, 1, 1]; CE is a weighted mean.
    w0, w1 = 1 / 3, 1.0
    expect = (w0 * -math.log(0.7) + w1 * -math.log(0.8) + w0 * -math.log(0.3)) / (2 * w0 + w1)
    loss = CrossEntropyLoss(class_weight="inverse", class_counts=COUNTS)
    assert loss(logits, TARGET).item() == pytest.approx(expect, abs=1e-7)
    assert loss.class_weight.tolist() == pytest.approx([2 / 3, 2.0, 2.0])  # Σ w n / Σ n = (200 + 200) / 400
    # effective number over scenes, β = 0.5: (0.5 / (1 − 0.5^4), 0.5 / (1 − 0.5^2)) = (8/15, 2/3).
    w0, w1 = 8 / 15, 2 / 3
    expect = (w0 * -math.log(0.7) + w1 * -math.log(0.8) + w0 * -math.log(0.3)) / (2 * w0 + w1)
    loss = CrossEntropyLoss(class_weight="effective_number", beta=0.5, weight_by="scenes", class_counts=COUNTS)
    assert loss(logits, TARGET).item() == pytest.approx(expect, abs=1e-7)
    # A hand-typed list still works, and a scheme without counts is a clear error.
    assert CrossEntropyLoss(class_weight=[1.0, 1.0, 1.0])(logits, TARGET).item() == pytest.approx(
        -(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3, abs=1e-7
    )
    with pytest.raises(ValueError, match="class_weight=inverse needs the class counts"):
        CrossEntropyLoss(class_weight="inverse")
    with pytest.raises(ValueError, match="unknown scheme 'inverse_frequency'"):
        CrossEntropyLoss(class_weight="inverse_frequency", class_counts=COUNTS)


def test_class_balanced_focal_by_hand():
    logits = PROBS.log()
    terms = [(1 - p) ** 2 * -math.log(p) for p in (0.7, 0.8, 0.3)]
    # inverse_sqrt of points [300, 100, 0→100]: [1/sqrt(300), 1/10, 1/10], Σ w n = sqrt(300) + 10.
    s = 400 / (math.sqrt(300) + 10)
    a0, a1 = s / math.sqrt(300), s / 10
    loss = FocalLoss(gamma=2.0, alpha="inverse_sqrt", class_counts=COUNTS)
    assert loss(logits, TARGET).item() == pytest.approx((a0 * terms[0] + a1 * terms[1] + a0 * terms[2]) / 3, abs=1e-7)
    with pytest.raises(ValueError, match="focal.alpha=effective_number needs the class counts"):
        FocalLoss(alpha="effective_number")


# ---------------------------------------------------------------- logit adjustment and balanced softmax
def _adjusted_ce_by_hand(logits: list[list[float]], target: list[int], log_p: list[float], tau: float) -> float:
    total = 0.0
    for f, y in zip(logits, target):
        z = [fk + tau * lp for fk, lp in zip(f, log_p)]
        total += -(z[y] - math.log(sum(math.exp(v) for v in z)))
    return total / len(target)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_loss_by_hand(tau):
    f = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]]
    y = [0, 2, 1]
    log_p = [math.log(0.6), math.log(0.2), math.log(0.2)]  # COUNTS by points, absent class 2 → 100
    loss = LogitAdjustedLoss(tau=tau, prior="points", class_counts=COUNTS)
    got = loss(torch.tensor(f + [[9.0, 9.0, 9.0]]), torch.tensor(y + [-1])).item()
    assert got == pytest.approx(_adjusted_ce_by_hand(f, y, log_p, tau), abs=1e-6)
    # A hand-typed prior (counts or probabilities) gives the same loss.
    listed = LogitAdjustedLoss(tau=tau, prior=[3, 1, 1])(torch.tensor(f), torch.tensor(y)).item()
    assert listed == pytest.approx(_adjusted_ce_by_hand(f, y, log_p, tau), abs=1e-6)


def test_balanced_softmax_value_and_closed_form_gradient():
    """Balanced softmax = τ = 1 logit adjustment; ∂L/∂f_ik = (q_ik − [k = y_i]) / N with
    q_i = softmax(f_i + log p) = p_k e^{f_ik} / Σ_j p_j e^{f_ij}."""
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 0, 1, -1])
    loss = BalancedSoftmaxLoss(prior="scenes", class_counts=COUNTS)
    out = loss(f, y)
    assert out.item() == pytest.approx(LogitAdjustedLoss(1.0, "scenes", class_counts=COUNTS)(f, y).item(), abs=1e-12)
    out.backward()
    p = np.array([4, 2, 2]) / 8
    fv = f.detach().numpy()
    q = p * np.exp(fv) / (p * np.exp(fv)).sum(1, keepdims=True)
    onehot = np.zeros_like(q)
    onehot[np.arange(6), y[:6].numpy()] = 1
    expect = np.zeros_like(q)
    expect[:6] = (q[:6] - onehot[:6]) / 6
    assert np.allclose(f.grad.numpy(), expect, atol=1e-6)  # the ignored row gets none


def test_absent_classes_keep_losses_finite_in_a_large_label_space():
    """20 classes present in a 200-class label space (the long-tailed benchmark's case)."""
    points = np.zeros(200, dtype=np.int64)
    points[:20] = np.geomspace(700_000, 700, 20).astype(np.int64)
    counts = ClassCounts(points, (points > 0).astype(np.int64), "test")
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 200, generator=gen, requires_grad=True)
    target = torch.randint(0, 20, (40,), generator=gen)
    for entry in ({"name": "balanced_softmax"}, {"name": "logit_adjusted", "tau": 2.0},
                  {"name": "cross_entropy", "class_weight": "inverse"},
                  {"name": "focal", "alpha": "effective_number", "beta": 0.9999}):
        crit = build_criteria([entry], counts)
        out = crit(logits, target)[f"loss_{entry['name']}"]
        (g,) = torch.autograd.grad(out, logits)
        assert torch.isfinite(out) and torch.isfinite(g).all(), entry
    prior = LogitAdjustedLoss(class_counts=counts).log_prior
    assert torch.all(prior[20:] == prior[19])  # absent classes: the rarest present class's prior


@pytest.mark.parametrize("entry", [
    {"name": "cross_entropy", "class_weight": "effective_number", "beta": 0.99},
    {"name": "focal", "alpha": "inverse"},
    {"name": "logit_adjusted", "tau": 1.5},
    {"name": "balanced_softmax", "prior": "scenes"},
])
def test_ignored_points_change_nothing(entry):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 2, (12,), generator=gen)
    all_logits = torch.cat([logits, 50 * torch.randn(5, 3, generator=gen, dtype=torch.float64)]).requires_grad_(True)
    all_target = torch.cat([target, torch.full((5,), -1)])
    loss = build_criteria([entry], COUNTS).terms[entry["name"]]
    a = loss(all_logits, all_target)
    assert a.item() == pytest.approx(loss(logits, target).item(), abs=1e-12)
    a.backward()
    assert torch.count_nonzero(all_logits.grad[12:]) == 0
    assert loss(all_logits[12:], all_target[12:]).item() == 0.0


# ---------------------------------------------------------------- building from a config
def test_build_criteria_reads_the_counts_once_and_only_when_needed():
    calls = []

    def provider() -> ClassCounts:
        calls.append(1)
        return COUNTS

    plain = [{"name": "cross_entropy", "class_weight": [1.0, 2.0, 3.0]}, {"name": "dice"}]
    assert not needs_class_counts(plain)
    build_criteria(plain, provider)
    assert calls == []
    stats = [{"name": "cross_entropy", "class_weight": "inverse"}, {"name": "logit_adjusted", "prior": "scenes"}]
    assert needs_class_counts(stats) and needs_class_counts([{"name": "balanced_softmax"}])
    crit = build_criteria(stats, provider)
    assert calls == [1]
    assert crit.terms["logit_adjusted"].log_prior.tolist() == pytest.approx(np.log([0.5, 0.25, 0.25]).tolist())
    with pytest.raises(ValueError, match=r"loss\[0\] \(balanced_softmax\): balanced_softmax.prior=points needs the class counts"):
        build_criteria([{"name": "balanced_softmax"}])
    assert "comes from the training data's stats.json" in check_losses([{"name": "focal", "class_counts": [1, 2]}])
    assert "takes" in check_losses([{"name": "balanced_softmax", "tau": 2.0}])  # τ is fixed at 1
    assert set(LOSSES) >= {"logit_adjusted", "balanced_softmax"}


ARMS = ["logit_adjusted", "balanced_softmax", "weighted_ce", "cb_focal", "ceco_balanced_softmax"]


@pytest.mark.parametrize("arm", ARMS)
def test_longtail_arm_builds_from_stats_json_and_trains(arm, tmp_path, tiny_backbone):
    """Each new arm's loss (and ceco) sections, on the tiny backbone, with counts from stats.json."""
    points = [0] * 200
    scenes = [0] * 200
    for k, n in zip((0, 3, 7, 42, 150), (5000, 2000, 300, 40, 7)):
        points[k], scenes[k] = n, max(1, n // 1000)
    (tmp_path / "stats.json").write_text(json.dumps(
        {"splits": {"train": {"class_point_counts": points, "class_scene_counts": scenes, "num_scenes": 5}}}
    ))
    arm_cfg = load_config(ROOT / "configs" / "longtail" / f"{arm}.yaml")
    assert ROOT.joinpath("configs", "longtail", f"{arm}.yaml").read_text().startswith("# Long-tailed")
    cfg = tiny_config(tmp_path)
    cfg.loss = arm_cfg.loss
    cfg.ceco = arm_cfg.ceco
    torch.manual_seed(0)
    model = build_segmentor(cfg, train=True).train()
    assert ("ceco" in model.aux_losses) == (arm == "ceco_balanced_softmax")
    gen = torch.Generator().manual_seed(0)
    parts = []
    for b in range(2):
        xyz = torch.unique(torch.randint(0, 32, (200, 3), generator=gen), dim=0)
        parts.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    coords = torch.cat(parts).int()
    classes = torch.tensor([0, 3, 7, 42, 150, -1])
    batch = {"coords": coords, "feat": torch.randn(len(coords), 3, generator=gen),
             "segment": classes[torch.randint(0, 6, (len(coords),), generator=gen)]}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    assert model.classifier.weight.grad is not None and torch.isfinite(model.classifier.weight.grad).all()
    # The evaluation model has no losses, so it needs no counts (not even a data.root).
    cfg.data.root = str(tmp_path / "elsewhere")
    assert build_segmentor(cfg, train=False).criteria is None


def test_training_on_a_folder_without_stats_json_counts_its_scenes(data_root, tiny_backbone):
    """Pointcept-style folders have no stats.json: the weights come from counting the labels."""
    cfg = tiny_config(data_root)
    cfg.loss = [{"name": "cross_entropy", "class_weight": "inverse"}]
    model = build_segmentor(cfg, train=True)
    w = model.criteria.terms["cross_entropy"].class_weight
    assert w.shape == (200,) and torch.isfinite(w).all()
    present = [0, 3, 7, 42, 150]  # engine_helpers.CLASSES: equal point counts per class
    assert torch.allclose(w[present], w[present].mean(), rtol=0.2)
    partial = {"data": {}, "model": {"name": cfg.model.name, "backend": "torch", "in_channels": 3}, "loss": cfg.loss}
    with pytest.raises(ValueError, match=r"loss\[0\] \(cross_entropy\): loss needs data.root"):
        build_segmentor(partial, train=True)
