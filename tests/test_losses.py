"""Segmentation losses against hand-computed values and brute-force references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pointseg.losses import (
    LOSSES,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    build_criteria,
)
from pointseg.losses.lovasz import lovasz_softmax_flat

# Three labelled points and one ignored point; logits = log(probs) so softmax returns PROBS.
PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]], dtype=torch.float64)
TARGET = torch.tensor([0, 1, 0, -1])


def test_dice_hand_computed():
    logits = PROBS.log()
    # class 0: inter 0.7 + 0.3 = 1.0, Σp = 1.1, Σy = 2;  class 1: inter 0.8, Σp = 1.3, Σy = 1.
    expect0 = 1 - (2 * 1.0 / 3.1 + 2 * 0.8 / 2.3) / 2
    expect1 = 1 - ((2 * 1.0 + 1) / 4.1 + (2 * 0.8 + 1) / 3.3) / 2
    assert DiceLoss(smooth=0.0)(logits, TARGET).item() == pytest.approx(expect0, abs=1e-6)
    assert DiceLoss(smooth=1.0)(logits, TARGET).item() == pytest.approx(expect1, abs=1e-6)
    assert expect0 == pytest.approx(0.329593, abs=1e-6)


def test_focal_hand_computed():
    logits = PROBS.log()
    # p_t = 0.7, 0.8, 0.3 for the three labelled points.
    terms = [(1 - p) ** 2 * -math.log(p) for p in (0.7, 0.8, 0.3)]
    assert FocalLoss(gamma=2.0)(logits, TARGET).item() == pytest.approx(sum(terms) / 3, abs=1e-6)
    # gamma = 0 is plain cross-entropy; alpha weights per class.
    assert FocalLoss(gamma=0.0)(logits, TARGET).item() == pytest.approx(
        -(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3, abs=1e-6
    )
    alpha = [0.5, 2.0, 1.0]
    weighted = [0.5 * terms[0], 2.0 * terms[1], 0.5 * terms[2]]
    assert FocalLoss(gamma=2.0, alpha=alpha)(logits, TARGET).item() == pytest.approx(sum(weighted) / 3, abs=1e-6)


def test_cross_entropy_matches_torch_and_class_weights():
    torch.manual_seed(0)
    logits = torch.randn(50, 6)
    target = torch.randint(-1, 6, (50,))
    keep = target >= 0
    assert torch.allclose(CrossEntropyLoss()(logits, target), F.cross_entropy(logits[keep], target[keep]))
    w = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0]
    assert torch.allclose(
        CrossEntropyLoss(class_weight=w)(logits, target),
        F.cross_entropy(logits[keep], target[keep], weight=torch.tensor(w)),
    )
    hand = -(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3
    assert CrossEntropyLoss()(PROBS.log(), TARGET).item() == pytest.approx(hand, abs=1e-9)


def _jaccard_set_loss(subset: set[int], fg: set[int]) -> float:
    """Δ_J of Berman et al.: |M| / |fg ∪ M| for the set M of mispredicted points."""
    return len(subset) / len(fg | subset) if subset or fg else 0.0


def _lovasz_brute(prob: torch.Tensor, target: torch.Tensor) -> float:
    """Lovász extension of Δ_J straight from its definition, Python sets, one class at a time."""
    losses = []
    for c in sorted(set(target.tolist())):
        fg = {i for i, t in enumerate(target.tolist()) if t == c}
        err = [abs((1.0 if i in fg else 0.0) - float(prob[i, c])) for i in range(len(target))]
        order = sorted(range(len(err)), key=lambda i: -err[i])
        total, prev, chosen = 0.0, 0.0, set()
        for i in order:
            chosen.add(i)
            cur = _jaccard_set_loss(chosen, fg)
            total += err[i] * (cur - prev)
            prev = cur
        losses.append(total)
    return sum(losses) / len(losses)


def test_lovasz_at_hard_prediction_is_one_minus_iou():
    target = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    pred = torch.tensor([0, 1, 1, 1, 2, 2, 0, 3])  # class 3 predicted but absent from the target
    prob = F.one_hot(pred, 4).double()
    ious = []
    for c in (0, 1, 2):
        inter = int(((pred == c) & (target == c)).sum())
        union = int(((pred == c) | (target == c)).sum())
        ious.append(inter / union)
    expect = 1 - sum(ious) / 3  # present classes only
    assert lovasz_softmax_flat(prob, target).item() == pytest.approx(expect, abs=1e-12)


def test_lovasz_matches_brute_force_definition():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    target = torch.randint(-1, 4, (40,), generator=gen)  # class 4 absent, some ignored
    keep = target >= 0
    got = LovaszLoss()(logits, target).item()
    assert got == pytest.approx(_lovasz_brute(F.softmax(logits[keep], 1), target[keep]), abs=1e-10)


def _make(name: str, num_classes: int):
    """Each registered loss with its defaults; a prior given by hand where the default reads the
    training counts (tests/test_longtail_losses.py covers those)."""
    needs = getattr(LOSSES[name], "needs_class_counts", None)
    if needs is not None and needs({}):
        return LOSSES[name](prior=[float(k + 1) for k in range(num_classes)])
    return LOSSES[name]()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_points_change_nothing(name):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (30,), generator=gen)
    extra = torch.randn(10, 4, generator=gen, dtype=torch.float64) * 10
    all_logits = torch.cat([logits, extra]).requires_grad_(True)
    all_target = torch.cat([target, torch.full((10,), -1)])
    loss = _make(name, 4)
    a = loss(all_logits, all_target)
    assert a.item() == pytest.approx(loss(logits, target).item(), abs=1e-12)
    a.backward()
    assert torch.count_nonzero(all_logits.grad[30:]) == 0
    assert torch.isfinite(all_logits.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_gives_zero_with_graph(name):
    logits = torch.randn(5, 3, requires_grad=True)
    out = _make(name, 3)(logits, torch.full((5,), -1))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_bad_labels_and_shapes_raise():
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lovasz: target must be"):
        LovaszLoss()(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="dice: logits must be"):
        DiceLoss()(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        FocalLoss()(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_build_criteria_returns_each_term_by_name():
    cfg = OmegaConf.create(
        [{"name": "cross_entropy", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}, {"name": "focal", "gamma": 1.0, "weight": 2}]
    )
    crit = build_criteria(cfg)
    logits = torch.randn(20, 4, requires_grad=True)
    target = torch.randint(-1, 4, (20,))
    out = crit(logits, target)
    assert list(out) == ["loss_cross_entropy", "loss_lovasz", "loss_focal"]
    assert crit.weights == {"loss_cross_entropy": 1.0, "loss_lovasz": 0.5, "loss_focal": 2.0}
    assert torch.allclose(out["loss_cross_entropy"], CrossEntropyLoss()(logits, target))
    assert torch.allclose(out["loss_lovasz"], LovaszLoss()(logits, target))
    assert torch.allclose(out["loss_focal"], FocalLoss(gamma=1.0)(logits, target))
    total = crit.weighted_sum(out)
    assert torch.allclose(total, out["loss_cross_entropy"] + 0.5 * out["loss_lovasz"] + 2 * out["loss_focal"])
    total.backward()
    assert logits.grad is not None


def test_build_criteria_rejects_bad_config():
    with pytest.raises(ValueError, match=r"loss\[0\]: unknown name 'hinge'"):
        build_criteria([{"name": "hinge"}])
    with pytest.raises(ValueError, match=r"loss\[0\]: unknown name 'lovaz'; did you mean 'lovasz'"):
        build_criteria([{"name": "lovaz"}])
    with pytest.raises(ValueError, match="appears twice"):
        build_criteria([{"name": "dice"}, {"name": "dice"}])
    with pytest.raises(ValueError, match=r"loss\[0\] \(dice\): got an unexpected keyword argument 'gamma'; it takes"):
        build_criteria([{"name": "dice", "gamma": 2}])
    with pytest.raises(ValueError, match="must be a list"):
        build_criteria({"name": "dice"})
    with pytest.raises(ValueError, match="with a 'name'"):
        build_criteria([{"weight": 1.0}])
