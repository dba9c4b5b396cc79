"""The point losses' shared prologue (pointseg.losses.point) on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from pointseg.losses import CrossEntropyLoss, DiceLoss, FocalLoss, LovaszLoss
from pointseg.losses.point import valid_points, zero_loss

POINT_LOSSES = {"cross_entropy": CrossEntropyLoss, "focal": FocalLoss, "lovasz": LovaszLoss, "dice": DiceLoss}


def test_valid_points_keeps_the_labelled_rows_in_order():
    logits = torch.arange(12.0).reshape(4, 3)
    picked = valid_points("x", logits, torch.tensor([2, -1, 0, -1], dtype=torch.int32), -1)
    assert picked is not None
    kept, target = picked
    assert kept.tolist() == [[0.0, 1.0, 2.0], [6.0, 7.0, 8.0]]
    assert target.dtype == torch.int64 and target.tolist() == [2, 0]
    # another ignore label: -1 is then out of range, 255 is skipped
    kept, target = valid_points("x", logits[:2], torch.tensor([255, 1]), 255)
    assert kept.tolist() == [[3.0, 4.0, 5.0]] and target.tolist() == [1]


def test_all_ignored_gives_none_and_a_zero_with_a_zero_gradient():
    logits = torch.tensor([[1.0, float("inf")], [float("nan"), -2.0]], requires_grad=True)
    assert valid_points("x", logits, torch.tensor([-1, -1]), -1) is None
    loss = zero_loss(logits)
    assert loss.item() == 0.0 and loss.requires_grad and loss.shape == ()
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(2, 2))  # not NaN either


@pytest.mark.parametrize(("labels", "bad"), [([0, 3], 3), ([-2, 1], -2), ([7, -1, 5], 7)])
def test_label_out_of_range_names_the_value_and_the_classes(labels, bad):
    with pytest.raises(ValueError, match=rf"^dice: label {bad} is out of range for 3 classes \(labels must be in 0..2 or -1"):
        valid_points("dice", torch.zeros(len(labels), 3), torch.tensor(labels), -1)


@pytest.mark.parametrize("name", sorted(POINT_LOSSES))
def test_every_point_loss_uses_the_prologue(name):
    loss = POINT_LOSSES[name]()
    with pytest.raises(ValueError, match=rf"^{name}: label 4 is out of range for 3 classes"):
        loss(torch.zeros(2, 3), torch.tensor([4, 0]))
    with pytest.raises(ValueError, match=rf"^{name}: target must be \(N,\)"):
        loss(torch.zeros(2, 3), torch.tensor([0]))
    # ignored points change nothing: the loss equals the loss of the labelled points alone
    torch.manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64)
    target = torch.tensor([0, -1, 2, 1, -1, 2])
    keep = target >= 0
    assert torch.equal(loss(logits, target), loss(logits[keep], target[keep]))
    out = loss(logits.requires_grad_(), torch.full((6,), -1))
    out.backward()
    assert out.item() == 0.0 and torch.equal(logits.grad, torch.zeros(6, 3))
