"""A checkpoint trained on any sparse backend predicts the same labels on every other one.

Weights are backend-neutral by design (each backend converts the one module-owned kernel layout
at its call boundary); this trains a real run (Trainer, CE + CeCo, a few steps) on each backend
and predicts every vertex of a val scene through the evaluation path on all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import tiny_config

from pointseg.analysis.visualize import predict_vertices
from pointseg.engine.trainer import Trainer
from pointseg.sparse import BACKENDS, available_backends, is_available

VAL_SCENE = "scene0100_00"


def _trained_on():
    return [pytest.param(b, marks=pytest.mark.skipif(not is_available(b), reason=f"{b} not installed")) for b in BACKENDS]


@pytest.mark.skipif(len(available_backends()) < 2, reason="needs two backends")
@pytest.mark.parametrize("trained_on", _trained_on())
def test_checkpoint_predicts_the_same_labels_on_every_backend(trained_on, data_root, tmp_path, tiny_backbone):
    cfg = tiny_config(data_root, iterations=12, save_every=12)
    cfg.model.backend = trained_on
    cfg.data.train_transforms = cfg.data.test_transforms  # deterministic batches
    cfg.optim.merge_with({"name": "AdamW", "lr": 0.01, "weight_decay": 0.0})
    Trainer(cfg, tmp_path / "run").train()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pth"

    labels = {
        b: predict_vertices(ckpt, data_root, "val", VAL_SCENE, overrides=[f"model.backend={b}"])
        for b in available_backends()
    }
    expected = labels[trained_on]
    assert len(np.unique(expected)) > 1, "the run learned nothing to compare (one class everywhere)"
    assert expected.shape == (np.load(Path(data_root) / "val" / VAL_SCENE / "coord.npy", allow_pickle=False).shape[0],)
    for backend, got in labels.items():
        assert np.array_equal(got, expected), f"{trained_on} checkpoint on {backend}: {(got != expected).sum()} vertices differ"
