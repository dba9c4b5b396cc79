"""A killed run resumed from its last checkpoint ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import read_jsonl, tiny_config

from pointseg.engine.checkpoint import load_checkpoint
from pointseg.engine.config import config_from_dict, to_plain_dict
from pointseg.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("tiny_backbone")

TIMING_KEYS = {"time", "memory_mb"}


class Killed(Exception):
    """Stands for SIGKILL: the process dies mid-iteration, nothing is saved."""


def _kill_at(trainer: Trainer, call: int, monkeypatch) -> None:
    forward = trainer.model.forward
    calls = {"n": 0}

    def dying(batch):
        calls["n"] += trainer.model.training  # count training forwards, not validation
        if calls["n"] == call:
            raise Killed
        return forward(batch)

    monkeypatch.setattr(trainer.model, "forward", dying)


SETTINGS = {
    "sgd_poly_warmup": {},
    "adamw_onecycle_accumulate_clip": {
        "optim": {"name": "AdamW", "lr": 0.002},
        "sched": {"name": "onecycle", "pct_start": 0.3},
        "train": {"accumulate": 2, "grad_clip": 1.0},
    },
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_kill_and_resume_equals_uninterrupted(setting, data_root, tmp_path, monkeypatch):
    iterations, kill_iteration = 5, 5

    def config():
        cfg = to_plain_dict(tiny_config(data_root, iterations=iterations, save_every=3, val_every=3, log_every=1))
        for section, values in SETTINGS[setting].items():
            if section == "train":
                cfg["train"].update(values)
            else:  # optimizer and schedule replaced as a whole
                cfg[section] = values
        return config_from_dict(cfg, source="test config")

    straight = Trainer(config(), tmp_path / "straight")
    straight.train()

    run = tmp_path / "killed"
    victim = Trainer(config(), run)
    accumulate = int(config().train.accumulate)
    _kill_at(victim, (kill_iteration - 1) * accumulate + 1, monkeypatch)
    with pytest.raises(Killed):
        victim.train()
    ckpt = load_checkpoint(run / "checkpoints" / "last.pth")
    assert ckpt["iteration"] == 3  # mid-epoch: 2 scenes per epoch at batch 1
    assert len(read_jsonl(run / "log.jsonl")) == kill_iteration - 1  # lines past the checkpoint exist

    resumed = Trainer(config(), run, resume=True)
    assert resumed.iteration == 3
    resumed.train()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        for name, value in sa[i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[i][name])), (i, name)
    assert straight.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"]

    def strip(records):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]

    log_a = strip(read_jsonl(tmp_path / "straight" / "log.jsonl"))
    log_b = strip(read_jsonl(run / "log.jsonl"))
    assert [r["iteration"] for r in log_b] == list(range(1, iterations + 1))
    assert log_a == log_b  # every loss term and lr, exactly
    assert read_jsonl(tmp_path / "straight" / "val.jsonl") == read_jsonl(run / "val.jsonl")
    final_a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pth")
    final_b = load_checkpoint(run / "checkpoints" / "last.pth")
    assert final_a["iteration"] == final_b["iteration"] == iterations
    assert final_a["rng"]["data"] == final_b["rng"]["data"]
    assert torch.equal(final_a["rng"]["torch"], final_b["rng"]["torch"])
    assert final_a["best_miou"] == final_b["best_miou"]


def test_stop_at_saves_and_resume_finishes(data_root, tmp_path):  # noqa: F811
    """A graceful stop (SIGTERM path) writes last.pth at the stop iteration."""
    run = tmp_path / "run"
    summary = Trainer(tiny_config(data_root, iterations=4, save_every=0), run).train(stop_at=2)
    assert summary["iteration"] == 2
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == 2
    summary = Trainer(tiny_config(data_root, iterations=4, save_every=0), run, resume=True).train()
    assert summary["iteration"] == 4
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == [1, 2, 3, 4]
