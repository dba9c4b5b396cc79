"""Trainer on tiny scenes: the loss falls, logs and checkpoints are complete, NaN stops the run,
inference loading drops the center branch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import TINY, read_jsonl, tiny_config
from omegaconf import OmegaConf

from pointseg.engine.checkpoint import export_inference_weights, load_checkpoint, load_for_inference
from pointseg.engine.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.usefixtures("tiny_backbone")

def test_short_run_overfits_two_scenes(data_root, tmp_path):
    cfg = tiny_config(data_root, iterations=30, val_every=0)
    cfg.data.train_transforms = cfg.data.test_transforms  # no augmentation: pure overfitting
    cfg.optim.merge_with({"name": "AdamW", "lr": 0.01, "weight_decay": 0.0})
    cfg.sched.merge_with({"name": "poly", "power": 0.9})
    summary = Trainer(cfg, tmp_path / "run").train()
    log = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert summary["iteration"] == 30 and [r["iteration"] for r in log] == list(range(1, 31))
    first = np.mean([r["loss"] for r in log[:5]])
    last = np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.5 * first, (first, last)
    ce_first = np.mean([r["loss_cross_entropy"] for r in log[:5]])
    ce_last = np.mean([r["loss_cross_entropy"] for r in log[-5:]])
    assert ce_last < 0.5 * ce_first


def test_run_folder_logs_and_checkpoints(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(data_root, iterations=4, save_every=2, val_every=2, snapshot_every=2)
    summary = Trainer(cfg, run).train()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pth", "iter_0000002.pth", "iter_0000004.pth", "last.pth"
    ]
    # log.jsonl: iteration, lr and every loss term the model returns (CE and CeCo here)
    log = read_jsonl(run / "log.jsonl")
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    for r in log:
        assert {"iteration", "lr", "loss", "loss_cross_entropy", "loss_ceco", "time", "memory_mb"} <= set(r)
        assert all(math.isfinite(r[k]) for k in ("loss", "loss_cross_entropy", "loss_ceco"))
        assert r["loss"] == pytest.approx(r["loss_cross_entropy"] + 0.4 * r["loss_ceco"], rel=1e-5)
    # warmup then poly: lr of iteration 1 is warmup_ratio * base lr
    assert log[0]["lr"] == pytest.approx(0.05 * 0.1) and log[2]["lr"] == pytest.approx(0.05 * (1 - 2 / 4) ** 0.9)
    val = read_jsonl(run / "val.jsonl")
    assert [r["iteration"] for r in val] == [2, 4] and all(0.0 <= r["miou"] <= 1.0 for r in val)
    assert summary["best_miou"] == pytest.approx(max(r["miou"] for r in val))
    assert (run / "config.yaml").exists()
    assert OmegaConf.load(run / "config.yaml").train.iterations == 4
    events = list(run.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_cross_entropy", "train/loss_ceco", "train/lr", "train/time", "val/miou"} <= tags

    # checkpoints: weights_only loadable, complete
    for name in ("last.pth", "best.pth"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert {"format", "model", "optimizer", "scheduler", "scaler", "rng", "iteration", "config", "best_miou"} <= set(ckpt)
        assert ckpt["format"] == 3 and "etf" not in ckpt  # the ETF is in the state dict only
    last = load_checkpoint(run / "checkpoints" / "last.pth")
    assert last["iteration"] == 4 and last["config"]["train"]["iterations"] == 4
    # 2 scenes at batch 1: iterations 3-4 are the two batches of epoch 1
    assert last["rng"]["data"] == {"seed": 3, "epoch": 1, "batch": 2}
    k = 200
    etf = last["model"]["aux_losses.ceco.etf"]
    assert etf.shape == (512, k)
    gram = etf.T @ etf  # simplex ETF: equal norms α², pairwise cosines −1/(K−1)
    assert torch.allclose(gram.diagonal(), torch.full((k,), 25.0), rtol=1e-4)
    cos = gram[0, 1] / 25.0
    assert float(cos) == pytest.approx(-1 / (k - 1), rel=1e-3)


def test_load_for_inference_and_export_drop_the_center_branch(data_root, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(data_root, iterations=2), run).train()
    ckpt_path = run / "checkpoints" / "last.pth"
    train_state = load_checkpoint(ckpt_path)["model"]
    assert any(k.startswith("aux_losses.ceco.") for k in train_state)

    model, cfg = load_for_inference(ckpt_path, overrides=["model.backend=torch"])
    assert not model.training and cfg.model.backend == "torch"
    state = model.state_dict()
    assert not any(k.startswith("aux_losses.ceco.") for k in state)
    assert all(torch.equal(v, train_state[k]) for k, v in state.items())

    exported = export_inference_weights(ckpt_path, tmp_path / "model.pth")
    blob = torch.load(exported, weights_only=True)
    assert set(blob) >= {"model", "config"} and "optimizer" not in blob
    assert not any(k.startswith("aux_losses.ceco.") for k in blob["model"])
    model2, _ = load_for_inference(exported)
    batch = {
        "coords": torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 1]], dtype=torch.int32),
        "feat": torch.rand(3, 3),
    }
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"], model2(batch)["logits"])


def test_nan_loss_stops_with_iteration_and_term_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(data_root, iterations=6, save_every=2), run)
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        out = forward(batch)
        if calls["n"] == 5:  # iteration 5: the CeCo term goes NaN
            out["loss_ceco"] = out["loss_ceco"] * float("nan")
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 5: loss term 'loss_ceco' is nan"):
        trainer.train()
    ckpt = load_checkpoint(run / "checkpoints" / "last.pth")
    assert ckpt["iteration"] == 4  # the last good one, written at save_every
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == [1, 2, 3, 4]


def test_unknown_train_key_is_an_error(data_root, tmp_path):
    with pytest.raises(ValueError, match="iteratons"):
        Trainer(tiny_config(data_root, iteratons=3), tmp_path / "run")


def test_existing_run_needs_resume(data_root, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(data_root, iterations=1), run).train()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(data_root, iterations=1), run)


def test_gradient_accumulation_equals_the_mean_of_micro_batch_gradients(data_root, tmp_path):
    """accumulate=2 with batch 1 gives the same update as one step on the mean of both losses."""
    cfg = tiny_config(data_root, iterations=1, accumulate=2, save_every=0)
    cfg.ceco.enabled = False
    cfg.data.train_transforms = cfg.data.test_transforms
    cfg.optim.merge_with({"name": "SGD", "lr": 0.1, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0})
    cfg.sched.merge_with({"name": "poly", "power": 1.0, "warmup_iters": 0})
    trainer = Trainer(cfg, tmp_path / "a")
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # reference: the same two batches, gradients of the mean loss, one SGD step by hand
    reference = Trainer(cfg, tmp_path / "b")
    reference.model.load_state_dict(start)
    batches = [reference._next_batch() for _ in range(2)]
    reference.model.train()
    loss = sum(reference.model(b)["loss"] for b in batches) / 2
    params = [p for p in reference.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    trainer.train()
    named = dict(trainer.model.named_parameters())
    for (name, p), g in zip([(n, p) for n, p in reference.model.named_parameters() if p.requires_grad], grads):
        expected = p.detach() - 0.1 * (g if g is not None else 0)
        assert torch.allclose(named[name].detach(), expected, atol=1e-6), name


def _train_tool():
    from pointseg.cli import train

    return train


def test_train_tool_runs_resumes_with_more_iterations_and_exports(data_root, tmp_path):
    tool = _train_tool()
    config = tmp_path / "tiny.yaml"
    OmegaConf.save(tiny_config(data_root), config)
    run, weights = tmp_path / "run", tmp_path / "model.pth"
    argv = ["--config", str(config), "--out", str(run), "--device", "cpu", "train.iterations=2"]
    assert tool.main([*argv, "--export-inference", str(weights)]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == 2
    assert not any(k.startswith("aux_losses.ceco.") for k in torch.load(weights, weights_only=True)["model"])
    # continue the same run folder (its config.yaml) for one more iteration
    assert tool.main(["--out", str(run), "--resume", "--device", "cpu", "train.iterations=3"]) == 0
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == [1, 2, 3]
    assert tool.main([*argv, "train.iteration=3"]) == 2  # a typo is an error, not ignored


@pytest.mark.parametrize("method", ["baseline", "ceco", "ceco_lovasz", "ceco_dice", "baseline_lovasz"])
def test_shipped_synthetic_configs_train(method, data_root, tmp_path):
    """Each configs/synthetic method runs two iterations end to end (tiny backbone, tiny scenes)."""
    from pointseg.engine.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / f"{method}.yaml"
    cfg = load_config(
        path,
        [f"data.root={data_root}", f"model.name={TINY}", "model.backend=torch", "train.iterations=2",
         "train.validate=false", "train.log_every=1", "train.progress_bar=false", "data.batch_size=1"],
    )
    Trainer(cfg, tmp_path / "run").train()
    log = read_jsonl(tmp_path / "run" / "log.jsonl")
    expected = {f"loss_{entry['name']}" for entry in cfg.loss} | ({"loss_ceco"} if cfg.ceco.enabled else set())
    for record in log:
        terms = {k for k in record if k.startswith("loss_")}
        assert terms == expected
        assert all(math.isfinite(record[k]) for k in terms | {"loss"})
