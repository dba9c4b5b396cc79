"""Post-hoc long-tail corrections at evaluation: logit adjustment by the training prior (Menon et
al., ICLR 2021) and the τ-normalized point classifier (Kang et al., ICLR 2020), against values
computed by hand; τ = 0 leaves every prediction of a checkpoint exactly as it was."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from engine_helpers import make_tiny_run
from torch import nn

from pointseg import meta
from pointseg.evaluation.posthoc import LogitAdjust, Posthoc, TauNorm, posthoc_models, read_prior
from pointseg.models.heads import LinearClassifier


def test_logit_adjustment_flips_the_argmax_as_by_hand():
    logits = torch.tensor([[2.0, 1.8, 0.0], [0.5, 0.0, 0.2]])
    prior = [0.7, 0.2, 0.1]
    # τ = 1: point 0 → [2 − log .7, 1.8 − log .2, 0 − log .1] = [2.357, 3.409, 2.303]: class 1;
    #        point 1 → [0.857, 1.609, 2.503]: class 2.
    adjusted = LogitAdjust(prior, 1.0)(logits)
    expect = [[2 - math.log(0.7), 1.8 - math.log(0.2), -math.log(0.1)],
              [0.5 - math.log(0.7), -math.log(0.2), 0.2 - math.log(0.1)]]
    np.testing.assert_allclose(adjusted.numpy(), expect, atol=1e-6)
    assert logits.argmax(1).tolist() == [0, 0] and adjusted.argmax(1).tolist() == [1, 2]
    assert torch.equal(LogitAdjust(prior, 0.0)(logits), logits)
    with pytest.raises(ValueError, match="the prior has 3 classes, the model 4"):
        LogitAdjust(prior, 1.0)(torch.zeros(2, 4))


def test_tau_norm_of_the_point_classifier_by_hand():
    classifier = LinearClassifier(2, 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.5]]))
        classifier.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
    model = nn.Module()
    model.classifier = classifier
    z = torch.tensor([[0.6, 0.9]])
    with torch.no_grad():
        logits = classifier(z)  # [1.3, 0.9, 0.35]: class 0
    # τ = 1: unit rows [1, 0], [0, 1], [0, 1], bias kept: [0.7, 0.9, 0.8]: class 1.
    normed = TauNorm(1.0)(logits, model)
    np.testing.assert_allclose(normed.numpy(), [[0.7, 0.9, 0.8]], atol=1e-6)
    assert logits.argmax(1).item() == 0 and normed.argmax(1).item() == 1
    # τ = 0.5: rows / sqrt(‖w‖) = [2/√2, 0], [0, 1], [0, 0.5/√0.5].
    half = TauNorm(0.5)(logits, model)
    np.testing.assert_allclose(half.numpy(), [[0.6 * math.sqrt(2) + 0.1, 0.9, 0.9 * math.sqrt(0.5) - 0.1]], atol=1e-6)
    assert torch.equal(TauNorm(0.0)(logits, model), logits)
    # Applied through a wrapped model, τ-norm first, then the prior.
    model.forward = lambda batch: {"logits": classifier(batch["feat"]), "feat": batch["feat"]}
    wrapped, record = posthoc_models([model], LogitAdjust([0.5, 0.25, 0.25], 1.0, "hand"), TauNorm(1.0))
    with torch.no_grad():
        out = wrapped[0]({"feat": z})["logits"]
    assert isinstance(wrapped[0], Posthoc)
    np.testing.assert_allclose(out.numpy(), [[0.7 - math.log(0.5), 0.9 - math.log(0.25), 0.8 - math.log(0.25)]], atol=1e-6)
    assert record == {"tau_norm": {"tau": 1.0},
                      "logit_adjust": {"tau": 1.0, "prior_source": "hand", "prior": [0.5, 0.25, 0.25]}}


def test_read_prior_from_a_stats_file_or_the_data_root(tmp_path):
    points = [0] * 200
    scenes = [0] * 200
    points[:3], scenes[:3] = [600, 300, 100], [3, 2, 1]
    stats = {"splits": {"train": {"class_point_counts": points, "class_scene_counts": scenes}}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    p, source = read_prior(200, stats_path=tmp_path / "stats.json")
    assert p[:3].tolist() == pytest.approx([600 / 20_700, 300 / 20_700, 100 / 20_700])  # 197 absent at 100
    assert p[3:].tolist() == pytest.approx([100 / 20_700] * 197) and "train points" in source
    by_scenes, _ = read_prior(200, data_root=tmp_path, by="scenes")
    assert by_scenes[:3].tolist() == pytest.approx([3 / 203, 2 / 203, 1 / 203])
    (tmp_path / "other.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(ValueError, match="other.json: no per-class counts of the train split"):
        read_prior(200, stats_path=tmp_path / "other.json")
    with pytest.raises(ValueError, match="--logit-adjust needs a prior"):
        read_prior(200)


def test_tool_posthoc_on_a_checkpoint(tmp_path):
    """τ = 0 gives exactly the predictions and confusion of the plain evaluation; a prior that
    makes one class rare by 10^6 and τ = 50 (a boost of 50·ln 10^6 ≈ 690 logits) predicts that
    class everywhere; metrics.json records the corrections and the prior used."""
    from pointseg.cli import evaluate as tool

    data, ckpts, _ = make_tiny_run(tmp_path)
    points = [10**6] * 200
    points[60] = 1
    prior_file = tmp_path / "prior.json"
    prior_file.write_text(json.dumps({"splits": {"train": {"class_point_counts": points, "class_scene_counts": [1] * 200}}}))
    base = ["--checkpoint", str(ckpts[0]), "--split", "val", "--no-fragments", "--save-predictions"]

    def run(name: str, *extra: str) -> tuple[np.ndarray, np.ndarray, dict]:
        out = tmp_path / name
        assert tool.main([*base, "--out", str(out), *extra]) == 0
        pred = np.loadtxt(out / "predictions" / "scene0000_00.txt", dtype=np.int64)
        conf = np.load(out / "confusion.npz", allow_pickle=False)["confusion"]
        return pred, conf, json.loads((out / "metrics.json").read_text())

    plain, plain_conf, plain_metrics = run("plain")
    assert "posthoc" not in plain_metrics
    zero, zero_conf, zero_metrics = run("zero", "--logit-adjust", "0", "--prior", str(prior_file), "--tau-norm", "0")
    np.testing.assert_array_equal(zero, plain)
    np.testing.assert_array_equal(zero_conf, plain_conf)
    record = zero_metrics["posthoc"]
    assert record["tau_norm"] == {"tau": 0.0} and record["logit_adjust"]["tau"] == 0.0
    assert str(prior_file) in record["logit_adjust"]["prior_source"]
    expect = np.array(points, dtype=np.float64) / sum(points)
    assert np.allclose(record["logit_adjust"]["prior"], expect)
    assert (plain != meta.class_table().scannet_id[60]).any()
    strong, _, _ = run("strong", "--logit-adjust", "50", "--prior", str(prior_file))
    assert (strong == meta.class_table().scannet_id[60]).all()
    assert tool.main([*base, "--out", str(tmp_path / "bad"), "--prior", str(prior_file)]) != 0
