"""The config's one pass: composed and checked once at load, frozen, and handed to the builders
as typed sections with one BuildContext; auxiliary losses; the trainer's callbacks; checkpoints
of the previous layout (format 2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import FIXTURES, predicts_as_recorded, tiny_config
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

import pointseg.losses
import pointseg.models
import pointseg.utils.schema as schema
from pointseg.data.dataset import DataConfig
from pointseg.data.stats import ClassCounts
from pointseg.engine.callbacks import Callback
from pointseg.engine.config import ExperimentConfig, config_from_dict, editable, load_config, to_plain_dict
from pointseg.engine.optim import OptimConfig, SchedConfig
from pointseg.engine.trainer import Trainer
from pointseg.engine.trainer_config import TrainConfig
from pointseg.losses import AUX_LOSSES, BuildContext, build_aux_losses
from pointseg.losses.ceco import CecoConfig, CenterCollapseLoss
from pointseg.models.segmentor import ModelConfig, build_context, build_segmentor, resolve_num_classes

ROOT = Path(__file__).resolve().parents[1]


def test_a_training_run_checks_each_section_exactly_once(data_root, tmp_path, tiny_backbone, monkeypatch):
    """Load, build the trainer (model, optimizer, schedule, both datasets) and train with a
    validation: every section's checks run once, at load, and the loss list is not re-checked."""
    checked: Counter = Counter()
    run_checks = schema._run_checks

    def counting(section, *args, **kwargs):
        checked[section] += 1
        return run_checks(section, *args, **kwargs)

    loss_checks = []
    check_losses = pointseg.losses.check_losses
    data = to_plain_dict(tiny_config(data_root, iterations=2, val_every=2))
    data["data"]["seed"] = None  # the trainer sets the run's seed into its copy of the section
    monkeypatch.setattr(schema, "_run_checks", counting)
    monkeypatch.setattr(pointseg.losses, "check_losses", lambda items: loss_checks.append(1) or check_losses(items))
    cfg = config_from_dict(data, source="test config")
    expected = {ExperimentConfig: 1, DataConfig: 1, ModelConfig: 1, CecoConfig: 1, OptimConfig: 1, SchedConfig: 1, TrainConfig: 1}
    assert dict(checked) == expected
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.cfg is cfg and trainer.val_set is not None and trainer.train_set.seed == 3
    summary = trainer.train()
    assert summary["iteration"] == 2 and summary["best_miou"] is not None
    assert dict(checked) == expected and loss_checks == []


def test_a_loaded_config_is_frozen_and_an_editable_copy_is_checked_again(data_root, tiny_backbone):
    cfg = config_from_dict(to_plain_dict(tiny_config(data_root)), source="test config")
    assert schema.is_checked(cfg, ExperimentConfig) and schema.is_checked(cfg.ceco, CecoConfig)
    with pytest.raises(ReadonlyConfigError):
        cfg.ceco.weight = 0.5
    copy = editable(cfg)
    copy.ceco.weight = -1.0  # not checked here: whoever takes the copy checks it
    assert not schema.is_checked(copy) and not schema.is_checked(OmegaConf.merge(cfg.ceco, {"weight": 0.5}))
    with pytest.raises(ValueError, match="ceco.weight must be >= 0"):
        build_segmentor(copy)


def test_every_shipped_config_loads_frozen():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if path.name == "_base_.yaml":
            continue
        cfg = load_config(path, ["data.root=/nowhere"])
        assert schema.is_checked(cfg, ExperimentConfig), path


def test_the_build_context_gives_every_builder_the_run_facts_and_reads_counts_once():
    cfg = {"model": {"num_classes": 7}, "data": {"root": "/somewhere"}}
    assert resolve_num_classes(cfg) == 7 and resolve_num_classes({}) == 200
    ctx = build_context(cfg)
    assert ctx.num_classes == 7 and ctx.data_root == Path("/somewhere") and ctx.feature_dim is None
    asked = []
    counts = ClassCounts(np.array([4, 3, 2, 1]), np.array([1, 1, 1, 1]), "test")
    ctx = BuildContext(4, counts=lambda who: asked.append(who) or counts)
    wide = ctx.with_feature_dim(8)
    assert wide.feature_dim == 8 and wide.class_counts("loss") is counts
    assert ctx.class_counts("ceco.prior") is counts and asked == ["loss"]  # shared, read once
    # An auxiliary loss is built from its section and the context alone; the prior comes from the counts.
    aux = build_aux_losses([("ceco", schema.section(CecoConfig, {"prior": "points", "proj_dim": 8}, "ceco"))], wide)
    expect = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64) + 1e-12).float()
    assert list(aux) == ["ceco"] and isinstance(aux["ceco"], AUX_LOSSES["ceco"])
    assert torch.allclose(aux["ceco"].log_prior, expect)
    with pytest.raises(ValueError, match="unknown"):
        build_aux_losses([("cecco", None)], wide)


class _Halving(torch.nn.Module):
    """A stand-in auxiliary loss: half the mean squared logit."""

    weight = 0.25

    def aux_terms(self, feat, logits, segment):
        return {"loss_half": 0.5 * logits.pow(2).mean()}


def test_auxiliary_losses_add_their_weighted_terms():
    from pointseg.models.heads import LinearClassifier
    from pointseg.models.segmentor import Segmentor

    class Backbone(torch.nn.Module):
        feature_dim = 4

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.lin(x.feats)

    torch.manual_seed(0)
    crit = pointseg.losses.build_criteria([{"name": "cross_entropy"}])
    model = Segmentor(Backbone(), LinearClassifier(4, 5), crit, {"squares": _Halving()}).train()
    coords = torch.cat([torch.zeros(6, 1), torch.arange(18).reshape(6, 3)], 1).int()
    feat, segment = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 4, -1])
    out = model({"coords": coords, "feat": feat, "segment": segment})
    logits = model.classifier(model.backbone.lin(feat))
    assert list(out) == ["loss", "loss_cross_entropy", "loss_half"]
    assert torch.allclose(out["loss_half"], 0.5 * logits.pow(2).mean())
    assert torch.allclose(out["loss"], out["loss_cross_entropy"] + 0.25 * out["loss_half"])


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def after_step(self, trainer, step):
        self.events.append(("step", step.iteration, sorted(step.losses)))

    def after_validation(self, trainer, iteration, metrics):
        self.events.append(("val", iteration, "miou" in metrics))

    def before_save(self, trainer, iteration, names, stage):
        self.events.append(("save", iteration, stage, list(names)))
        if stage == "step" and iteration == 1:
            names.append("extra.pth")


def test_callbacks_see_steps_validations_and_saves(data_root, tmp_path, tiny_backbone):
    cfg = tiny_config(data_root, iterations=2, save_every=0, val_every=2, snapshot_every=1)
    recorder = _Recorder()
    Trainer(cfg, tmp_path / "run", callbacks=[recorder]).train()
    terms = ["loss", "loss_ceco", "loss_cross_entropy"]
    assert recorder.events == [
        ("step", 1, terms), ("save", 1, "step", ["iter_0000001.pth"]),
        ("step", 2, terms), ("save", 2, "step", ["last.pth", "iter_0000002.pth"]),
        ("val", 2, True), ("save", 2, "validation", ["last.pth", "best.pth"]),  # BestCheckpoint ran first
    ]
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pth"))
    assert saved == ["best.pth", "extra.pth", "iter_0000001.pth", "iter_0000002.pth", "last.pth"]


def test_checkpoint_of_format_2_loads_and_predicts_as_it_did(monkeypatch, one_thread):
    """tests/fixtures/format2_ceco.pth was written before the center branch became an auxiliary
    loss (``center_loss.*`` keys, an ``etf`` entry): it loads for inference with the stored
    outputs, and its training model loads with the branch's tensors under ``aux_losses.ceco.``."""
    from pointseg.engine.checkpoint import load_checkpoint

    path = FIXTURES / "format2_ceco.pth"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == 2 and "center_loss.etf" in raw["model"] and "etf" in raw
    _, cfg, out, expected = predicts_as_recorded(monkeypatch, "format2_ceco.pth", "format2_ceco_expected.npz")
    assert np.array_equal(out["logits"].argmax(1).numpy(), expected["logits"].argmax(1))
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == 3 and "etf" not in ckpt
    assert not any(k.startswith("center_loss.") for k in ckpt["model"])
    train_model = build_segmentor(cfg, train=True)
    train_model.load_state_dict(ckpt["model"], strict=True)
    ceco = train_model.aux_losses["ceco"]
    assert isinstance(ceco, CenterCollapseLoss) and torch.equal(ceco.etf, raw["etf"])
    assert torch.equal(ceco.log_prior, raw["model"]["center_loss.log_prior"])
