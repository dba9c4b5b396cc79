"""Segmentor: it owns its heads; named losses in training, backbone + classifier at evaluation, no
center branch at inference; point classifiers of paper Table 1; 0.1.0 checkpoints still load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pointseg.models
from pointseg.losses import build_criteria
from pointseg.losses.ceco import CenterCollapseLoss
from pointseg.models.heads import ETFPointClassifier, LinearClassifier
from pointseg.models.segmentor import Segmentor, build_segmentor, strip_aux_losses
from pointseg.sparse import SparseTensor

K = 6


class TinyBackbone(nn.Module):
    """Stand-in with the backbone contract: SparseTensor → features (M, feature_dim)."""

    def __init__(self, in_channels: int = 3, feature_dim: int = 8, **_: object) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(nn.Linear(in_channels, feature_dim), nn.ReLU())

    def forward(self, x):
        return self.mlp(x.feats)


def _segmentor(center_loss=None, crit=None) -> Segmentor:
    crit = crit or build_criteria([{"name": "cross_entropy"}])
    return Segmentor(TinyBackbone(), LinearClassifier(8, K), crit, {"ceco": center_loss} if center_loss else None)


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
        "ceco": {"enabled": True, "proj_dim": 16, "prior": "none", **ceco},
        "loss": [{"name": "cross_entropy", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}],
    }


@pytest.fixture
def tiny_registry(monkeypatch):
    """The backbone registry, knowing the stand-in (name "Tiny") besides the real backbones."""
    monkeypatch.setitem(pointseg.models.BACKBONES, "Tiny", TinyBackbone)


def test_training_returns_each_term_and_weighted_total():
    torch.manual_seed(0)
    crit = build_criteria([{"name": "cross_entropy", "weight": 1.0}, {"name": "dice", "weight": 0.3}])
    model = _segmentor(CenterCollapseLoss(8, K, weight=0.4, proj_dim=16, dropout=0.0), crit).train()
    batch = _batch()
    out = model(batch)
    assert list(out) == ["loss", "loss_cross_entropy", "loss_dice", "loss_ceco"]
    feat = model.backbone(SparseTensor(batch["feat"], batch["coords"]))
    logits = model.classifier(feat)
    assert torch.allclose(out["loss_cross_entropy"], crit.terms["cross_entropy"](logits, batch["segment"]))
    assert torch.allclose(out["loss_ceco"], model.aux_losses["ceco"](feat, batch["segment"]))
    expect = out["loss_cross_entropy"] + 0.3 * out["loss_dice"] + 0.4 * out["loss_ceco"]
    assert torch.allclose(out["loss"], expect)
    assert out["loss"].requires_grad and not out["loss_ceco"].requires_grad
    out["loss"].backward()
    assert model.backbone.mlp[0].weight.grad is not None
    assert list(model.aux_losses) == ["ceco"]


def test_center_term_reaches_the_backbone():
    """λ·L_CR contributes to the backbone gradient: with λ = 0 the gradient differs."""
    batch = _batch()
    grads = []
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        model = _segmentor(CenterCollapseLoss(8, K, weight=lam, proj_dim=16)).train()
        model(batch)["loss"].backward()
        grads.append(model.backbone.mlp[0].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_eval_mode_runs_the_backbone_and_classifier_only():
    torch.manual_seed(0)
    model = _segmentor(CenterCollapseLoss(8, K, proj_dim=16))
    calls = []
    model.aux_losses["ceco"].register_forward_hook(lambda *a: calls.append(1))
    model.criteria.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        feat = model.backbone(SparseTensor(batch["feat"], batch["coords"]))
    assert set(out) == {"logits", "feat"} and calls == []
    assert torch.equal(out["logits"], model.classifier(feat)) and torch.equal(out["feat"], feat)
    model.train()
    model(batch)
    assert calls == [1, 1]


def test_eval_model_has_no_center_branch_and_loads_training_weights(tiny_registry):
    torch.manual_seed(0)
    train_model = build_segmentor(_cfg(projection="learned"), train=True)
    eval_model = build_segmentor(_cfg(projection="learned"), train=False)
    assert "ceco" in train_model.aux_losses and "ceco" not in eval_model.aux_losses
    assert not any("aux_losses" in k for k in eval_model.state_dict())
    n_net = sum(p.numel() for p in eval_model.backbone.parameters()) + sum(p.numel() for p in eval_model.classifier.parameters())
    assert sum(p.numel() for p in eval_model.parameters()) == n_net
    state = train_model.state_dict()
    assert any(k.startswith("aux_losses.ceco.") for k in state)
    with pytest.raises(RuntimeError):
        eval_model.load_state_dict(state, strict=True)
    eval_model.load_state_dict(strip_aux_losses(state), strict=True)
    ddp_state = {f"module.{k}": v for k, v in state.items()}
    assert set(strip_aux_losses(ddp_state)) == {f"module.{k}" for k in eval_model.state_dict()}
    batch = _batch()
    train_model.eval()
    eval_model.eval()
    with torch.no_grad():
        a, b = train_model(batch), eval_model(batch)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["feat"], b["feat"])


def test_etf_point_classifier(tiny_registry):
    """Table 1's fixed point classifier: a learned linear lift (no bias, no ReLU) to proj_dim and
    the center branch's own W*; only the lift trains."""
    cfg = _cfg()
    cfg["model"]["point_classifier"] = "etf"
    model = build_segmentor(cfg).train()
    head = model.classifier
    assert isinstance(head, ETFPointClassifier)
    assert torch.equal(head.etf, model.aux_losses["ceco"].etf)  # same seed, dim and α: the same W*
    assert [n for n, _ in head.named_parameters()] == ["lift.weight"] and head.lift.bias is None
    etf0 = head.etf.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = _batch()
    model(batch)["loss"].backward()
    opt.step()
    assert torch.equal(head.etf, etf0) and head.lift.weight.grad is not None
    model.eval()
    with torch.no_grad():
        pred = model(batch)
    expect = (pred["feat"] @ head.lift.weight.T) @ head.etf  # linear: negative features keep their sign
    assert torch.allclose(pred["logits"], expect, atol=1e-6)
    assert torch.allclose(pred["feat"] @ head.weight_matrix().T, expect, atol=1e-5)
    cfg["ceco"]["proj_dim"] = 4  # cannot hold a 6-class simplex ETF
    with pytest.raises(ValueError, match="at least num_classes - 1 = 5"):
        build_segmentor(cfg)


def test_linear_classifier_weight_matrix_gives_the_logits():
    head = LinearClassifier(8, K)
    x = torch.randn(5, 8)
    assert torch.allclose(x @ head.weight_matrix().T + head.bias, head(x))


@pytest.mark.parametrize(
    "name,point,center",
    [
        ("table1_point_etf", ETFPointClassifier, None),
        ("table1_point_etf_center_etf", ETFPointClassifier, "etf"),
        ("table1_point_etf_center_learned", ETFPointClassifier, "learned"),
        ("table1_point_learned_center_etf", LinearClassifier, "etf"),
        ("table1_point_learned_center_learned", LinearClassifier, "learned"),
    ],
)
def test_table1_configs_build_the_classifiers_they_name(name, point, center):
    from pathlib import Path

    from pointseg.engine.config import load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "scannet200" / f"{name}.yaml", ["model.name=MinkUNet14S", "ceco.prior=none"])
    model = build_segmentor(cfg)
    assert type(model.classifier) is point
    if center is None:
        assert "ceco" not in model.aux_losses
    else:
        assert model.aux_losses["ceco"].classifier_kind == center
        assert (model.aux_losses["ceco"].etf is not None) == (center == "etf")
        assert isinstance(model.aux_losses["ceco"].classifier, nn.Linear) == (center == "learned")
    if point is ETFPointClassifier:
        assert model.classifier.etf.shape == (512, 200)


def test_config_variants_and_errors(tiny_registry):
    cfg = _cfg(classifier="learned")
    model = build_segmentor(cfg)
    assert model.aux_losses["ceco"].etf is None and isinstance(model.aux_losses["ceco"].classifier, nn.Linear)
    off = _cfg()
    off["ceco"]["enabled"] = False
    assert "ceco" not in build_segmentor(off).aux_losses
    assert list(build_segmentor(off).train()(_batch())) == ["loss", "loss_cross_entropy", "loss_lovasz"]
    bad = _cfg()
    bad["model"]["point_classifier"] = "cosine"
    with pytest.raises(ValueError, match="model.point_classifier must be one of \\['learned', 'etf'\\] \\(got 'cosine'\\)"):
        build_segmentor(bad)
    typo = _cfg()
    typo["model"]["num_clases"] = 20
    with pytest.raises(ValueError, match="model: unknown key 'num_clases'; did you mean 'num_classes'"):
        build_segmentor(typo)
    wrong = _cfg()
    wrong["model"]["in_channels"] = 6
    with pytest.raises(ValueError, match="model.in_channels is 6 but data.features \\['color'\\] give 3 channels"):
        build_segmentor(wrong)
    with pytest.raises(KeyError, match="no 'segment'"):
        build_segmentor(_cfg()).train()({k: v for k, v in _batch().items() if k != "segment"})


def test_omegaconf_config_builds(tiny_registry):
    from omegaconf import OmegaConf

    model = build_segmentor(OmegaConf.create(_cfg()))
    assert model.aux_losses["ceco"].weight == 0.4 and model.aux_losses["ceco"].projection.out_dim == 16
    assert model.aux_losses["ceco"].reduce.out_dim == 128 and model.aux_losses["ceco"].log_prior is None


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
        "ceco": {"enabled": True, "prior": [5, 1, 0, 3, 3, 2, 9, 1, 1, 4]},
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
    assert model.aux_losses["ceco"].etf.shape == (512, 10) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.classifier.weight.grad is not None
    eval_model = build_segmentor(cfg, train=False)
    eval_model.load_state_dict(strip_aux_losses(model.state_dict()), strict=True)
    model.eval()
    eval_model.eval()
    with torch.no_grad():
        a, b = model(batch), eval_model(batch)
    assert a["logits"].shape == (len(coords), 10) and a["feat"].shape == (len(coords), 96)
    assert torch.allclose(a["logits"], b["logits"]) and torch.allclose(a["feat"], b["feat"])


def test_checkpoint_of_0_1_0_loads_and_predicts_as_it_did(tiny_registry, monkeypatch):
    """tests/fixtures/legacy_0.1.0_ceco.pth was written by pointseg 0.1.0 (point classifier inside
    the backbone, ``ceco.logit_adjust``): it loads for inference and gives the stored outputs, and
    its training model (the center branch of Eq. 3-4) loads too."""
    from engine_helpers import FIXTURES, predicts_as_recorded

    from pointseg.engine.checkpoint import load_checkpoint

    path = FIXTURES / "legacy_0.1.0_ceco.pth"
    assert "backbone.classifier.weight" in torch.load(path, weights_only=True)["model"]
    _, cfg, _, _ = predicts_as_recorded(monkeypatch, "legacy_0.1.0_ceco.pth", "legacy_0.1.0_ceco_expected.npz")
    assert cfg.ceco.head == "paper_eq4" and cfg.ceco.prior == "none" and "logit_adjust" not in cfg.ceco
    assert cfg.model.bn_momentum == 0.1  # what 0.1.0 trained with
    ckpt = load_checkpoint(path)
    train_model = build_segmentor(cfg, train=True)
    train_model.load_state_dict(ckpt["model"], strict=True)
    assert train_model.aux_losses["ceco"].reduce is None and isinstance(train_model.aux_losses["ceco"].dropout, nn.Identity)
