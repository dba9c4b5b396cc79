"""Segmentor: named losses in training, backbone-only evaluation, no center branch at inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pointseg.models
from pointseg.losses import build_criteria
from pointseg.losses.ceco import CenterCollapseLoss
from pointseg.sparse import SparseTensor
from pointseg.models.segmentor import ETFPointClassifier, Segmentor, build_segmentor, strip_center_branch

K = 6


class TinyBackbone(nn.Module):
    """Stand-in with the backbone contract: SparseTensor → {"feat", "logits"}."""

    def __init__(self, in_channels: int = 3, num_classes: int = K, feature_dim: int = 8, **_: object) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(nn.Linear(in_channels, feature_dim), nn.ReLU())
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x):
        feat = self.mlp(x.feats)
        return {"feat": feat, "logits": self.classifier(feat)}


def _batch(n: int = 64, seed: int = 0, extent: int = 8) -> dict:
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.unique(torch.randint(0, extent, (n, 3), generator=gen), dim=0)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int64), xyz], 1).int()
    return {
        "coords": coords,
        "feat": torch.randn(len(xyz), 3, generator=gen),
        "segment": torch.randint(-1, K, (len(xyz),), generator=gen),
    }


def _cfg(**ceco) -> dict:
    return {
        "data": {},
        "model": {"name": "Tiny", "backend": "torch", "in_channels": 3, "num_classes": K},
        "ceco": {"enabled": True, "proj_dim": 16, **ceco},
        "loss": [{"name": "cross_entropy", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}],
    }


@pytest.fixture
def tiny_registry(monkeypatch):
    """The backbone registry, knowing the stand-in (name "Tiny") besides the real backbones."""
    monkeypatch.setitem(pointseg.models.BACKBONES, "Tiny", TinyBackbone)


def test_training_returns_each_term_and_weighted_total():
    torch.manual_seed(0)
    crit = build_criteria([{"name": "cross_entropy", "weight": 1.0}, {"name": "dice", "weight": 0.3}])
    model = Segmentor(TinyBackbone(), crit, CenterCollapseLoss(8, K, weight=0.4, proj_dim=16)).train()
    batch = _batch()
    out = model(batch)
    assert list(out) == ["loss", "loss_cross_entropy", "loss_dice", "loss_ceco"]
    feats = model.backbone(SparseTensor(batch["feat"], batch["coords"]))
    assert torch.allclose(out["loss_cross_entropy"], crit.terms["cross_entropy"](feats["logits"], batch["segment"]))
    assert torch.allclose(out["loss_ceco"], model.center_loss(feats["feat"], batch["segment"]))
    expect = out["loss_cross_entropy"] + 0.3 * out["loss_dice"] + 0.4 * out["loss_ceco"]
    assert torch.allclose(out["loss"], expect)
    assert out["loss"].requires_grad and not out["loss_ceco"].requires_grad
    out["loss"].backward()
    assert model.backbone.mlp[0].weight.grad is not None
    assert model.etf is model.center_loss.etf


def test_center_term_reaches_the_backbone():
    """λ·L_CR contributes to the backbone gradient: with λ = 0 the gradient differs."""
    batch = _batch()
    grads = []
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        model = Segmentor(TinyBackbone(), build_criteria([{"name": "cross_entropy"}]),
                          CenterCollapseLoss(8, K, weight=lam, proj_dim=16)).train()
        model(batch)["loss"].backward()
        grads.append(model.backbone.mlp[0].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_eval_mode_runs_the_backbone_only():
    torch.manual_seed(0)
    model = Segmentor(TinyBackbone(), build_criteria([{"name": "cross_entropy"}]), CenterCollapseLoss(8, K, proj_dim=16))
    calls = []
    model.center_loss.register_forward_hook(lambda *a: calls.append(1))
    model.criteria.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        ref = model.backbone(SparseTensor(batch["feat"], batch["coords"]))
    assert set(out) == {"logits", "feat"} and calls == []
    assert torch.equal(out["logits"], ref["logits"]) and torch.equal(out["feat"], ref["feat"])
    model.train()
    model(batch)
    assert calls == [1, 1]


def test_eval_model_has_no_center_branch_and_loads_training_weights(tiny_registry):
    torch.manual_seed(0)
    train_model = build_segmentor(_cfg(projection="learned"), train=True)
    eval_model = build_segmentor(_cfg(projection="learned"), train=False)
    assert train_model.center_loss is not None and eval_model.center_loss is None
    assert not any("center_loss" in k for k in eval_model.state_dict())
    n_backbone = sum(p.numel() for p in eval_model.backbone.parameters())
    assert sum(p.numel() for p in eval_model.parameters()) == n_backbone
    state = train_model.state_dict()
    assert any(k.startswith("center_loss.") for k in state)
    with pytest.raises(RuntimeError):
        eval_model.load_state_dict(state, strict=True)
    eval_model.load_state_dict(strip_center_branch(state), strict=True)
    ddp_state = {f"module.{k}": v for k, v in state.items()}
    assert set(strip_center_branch(ddp_state)) == {f"module.{k}" for k in eval_model.state_dict()}
    batch = _batch()
    train_model.eval()
    eval_model.eval()
    with torch.no_grad():
        a, b = train_model(batch), eval_model(batch)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["feat"], b["feat"])


def test_etf_point_classifier(tiny_registry):
    cfg = _cfg(projection="frozen")
    cfg["model"]["point_classifier"] = "etf"
    model = build_segmentor(cfg).train()
    head = model.backbone.classifier
    assert isinstance(head, ETFPointClassifier)
    # Same seed and sizes as the center branch: the same W* and projection.
    assert torch.equal(head.etf, model.center_loss.etf)
    assert torch.equal(head.projection.weight, model.center_loss.projection.weight)
    assert list(head.parameters()) == []
    batch = _batch()
    out = model(batch)
    out["loss"].backward()
    model.eval()
    with torch.no_grad():
        pred = model(batch)
    expect = torch.relu(pred["feat"] @ head.projection.weight.T + head.projection.bias) @ head.etf
    assert torch.allclose(pred["logits"], expect, atol=1e-6)
    cfg["ceco"]["projection"] = "none"  # 8-d features cannot carry a 20-class ETF
    cfg["model"]["num_classes"] = 20
    with pytest.raises(ValueError, match="point_classifier=etf with ceco.projection=none"):
        build_segmentor(cfg)


def test_config_variants_and_errors(tiny_registry):
    cfg = _cfg(classifier="learned")
    model = build_segmentor(cfg)
    assert model.center_loss.etf is None and isinstance(model.center_loss.classifier, nn.Linear)
    off = _cfg()
    off["ceco"]["enabled"] = False
    assert build_segmentor(off).center_loss is None
    assert list(build_segmentor(off).train()(_batch())) == ["loss", "loss_cross_entropy", "loss_lovasz"]
    bad = _cfg()
    bad["model"]["point_classifier"] = "cosine"
    with pytest.raises(ValueError, match="unknown 'cosine'"):
        build_segmentor(bad)
    missing = _cfg()
    del missing["model"]["num_classes"]
    with pytest.raises(ValueError, match="model.num_classes is missing"):
        build_segmentor(missing)
    with pytest.raises(KeyError, match="no 'segment'"):
        build_segmentor(_cfg()).train()({k: v for k, v in _batch().items() if k != "segment"})


def test_omegaconf_config_builds(tiny_registry):
    from omegaconf import OmegaConf

    model = build_segmentor(OmegaConf.create(_cfg()))
    assert model.center_loss.weight == 0.4 and model.center_loss.projection.out_dim == 16


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine, a 2-thread pool waits for its preempted
    partner at each of the thousands of small ops of a tiny network (seconds → minutes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_minkunet_train_step_and_eval(one_thread):
    """MinkUNet14A (torch backend) on a few hundred voxels: CE + Lovász + CeCo, then inference."""
    cfg = {
        "model": {"name": "MinkUNet14A", "backend": "torch", "in_channels": 3, "num_classes": 10},
        "ceco": {"enabled": True},
        "loss": [{"name": "cross_entropy", "weight": 1.0}, {"name": "lovasz", "weight": 1.0}],
    }
    torch.manual_seed(0)
    model = build_segmentor(cfg).train()
    gen = torch.Generator().manual_seed(0)
    parts = []
    for b in range(2):
        xyz = torch.unique(torch.randint(0, 32, (120, 3), generator=gen), dim=0)
        parts.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    coords = torch.cat(parts).int()
    batch = {"coords": coords, "feat": torch.randn(len(coords), 3, generator=gen),
             "segment": torch.randint(-1, 10, (len(coords),), generator=gen)}
    out = model(batch)
    assert list(out) == ["loss", "loss_cross_entropy", "loss_lovasz", "loss_ceco"]
    assert model.center_loss.etf.shape == (512, 10) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.backbone.classifier.weight.grad is not None
    eval_model = build_segmentor(cfg, train=False)
    eval_model.load_state_dict(strip_center_branch(model.state_dict()), strict=True)
    model.eval()
    eval_model.eval()
    with torch.no_grad():
        a, b = model(batch), eval_model(batch)
    assert a["logits"].shape == (len(coords), 10) and a["feat"].shape == (len(coords), 96)
    assert torch.allclose(a["logits"], b["logits"]) and torch.allclose(a["feat"], b["feat"])
