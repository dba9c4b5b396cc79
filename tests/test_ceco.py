"""CeCo: the simplex ETF (Eq. 2), center pooling (Eq. 3), the gradient of L_CR (Eq. 8), the
released head against a literal transcription of its formulas, the class prior, the lowest L_CR
each head can reach, the minority-collapse mechanism, global centers across processes, and that
fixed parts stay fixed under training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from pointseg.losses.ceco import (
    CenterCollapseLoss,
    CenterProjection,
    center_pool,
    random_orthonormal,
    simplex_etf,
)


@pytest.mark.parametrize("k,d", [(2, 2), (3, 2), (5, 8), (10, 10), (20, 19), (200, 512)])
def test_simplex_etf_properties(k, d):
    alpha = 5.0
    w = simplex_etf(k, d, alpha=alpha, seed=7).double()
    assert w.shape == (d, k)
    norms = w.norm(dim=0)
    assert torch.allclose(norms, torch.full((k,), alpha, dtype=torch.float64), atol=1e-5)
    cos = (w.T @ w) / (norms[:, None] * norms[None, :])
    off = cos[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-6)
    assert torch.allclose(w.sum(1), torch.zeros(d, dtype=torch.float64), atol=1e-5)  # centred frame
    assert torch.equal(w.float(), simplex_etf(k, d, alpha=alpha, seed=7))  # same seed, same matrix
    assert not torch.allclose(w.float(), simplex_etf(k, d, alpha=alpha, seed=8))


@pytest.mark.parametrize("k,d", [(5, 8), (10, 10), (200, 512)])
def test_simplex_etf_is_eq2_with_orthonormal_u(k, d):
    u = random_orthonormal(d, k, seed=3)
    assert torch.allclose(u.T @ u, torch.eye(k, dtype=torch.float64), atol=1e-10)
    eq2 = 2.0 * (k / (k - 1)) ** 0.5 * u @ (torch.eye(k, dtype=torch.float64) - torch.ones(k, k, dtype=torch.float64) / k)
    assert torch.allclose(simplex_etf(k, d, alpha=2.0, seed=3).double(), eq2, atol=1e-6)


def test_simplex_etf_rejects_too_few_dimensions():
    with pytest.raises(ValueError, match="needs dim >= 9"):
        simplex_etf(10, 8)


def _center_pool_loop(feat, segment, k):
    centers, labels, counts = [], [], []
    for c in range(k):
        rows = [feat[i] for i in range(len(segment)) if int(segment[i]) == c]
        if rows:
            centers.append(torch.stack(rows).mean(0))
            labels.append(c)
            counts.append(len(rows))
    return torch.stack(centers), torch.tensor(labels), torch.tensor(counts, dtype=feat.dtype)


def test_center_pool_equals_loop_reference():
    gen = torch.Generator().manual_seed(0)
    k = 9
    feat = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    segment = torch.randint(-1, k, (200,), generator=gen)
    segment[segment == 4] = -1  # an absent class
    segment[segment == 7] = 8
    centers, labels, counts = center_pool(feat, segment, k)
    ref_c, ref_l, ref_n = _center_pool_loop(feat, segment, k)
    assert torch.equal(labels, ref_l) and 4 not in labels.tolist() and 7 not in labels.tolist()
    assert torch.equal(counts, ref_n)
    assert torch.allclose(centers, ref_c, atol=1e-12)


def test_center_pool_errors():
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        center_pool(torch.zeros(3, 2), torch.tensor([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="expected feat"):
        center_pool(torch.zeros(3, 2), torch.tensor([0, 1]), 3)


@pytest.mark.parametrize("prior", [None, [10.0, 1.0, 3.0, 50.0, 6.0]])
def test_grad_of_center_loss_is_eq8(prior):
    """∂L_CR/∂z_i = (1/C)(1/n_k) Σ_k' p_k'(z̄_k)(w_k' − w_k), k the label of point i."""
    k, d = 5, 8
    gen = torch.Generator().manual_seed(2)
    loss_fn = CenterCollapseLoss(
        d, k, reduce_dim=0, projection="none", normalize=False, dropout=0.0, alpha=5.0, class_prior=prior
    )
    segment = torch.tensor([0, 0, 1, -1, 3, 3, 3, 1, -1, 0, 3, 3])  # class 2 and 4 absent
    z = torch.randn(len(segment), d, generator=gen, dtype=torch.float64, requires_grad=True)
    loss_fn(z, segment).backward()

    w = loss_fn.etf.double()  # (d, K)
    log_prior = torch.zeros(k, dtype=torch.float64) if prior is None else loss_fn.log_prior.double()
    present = sorted({int(s) for s in segment if s >= 0})
    expect = torch.zeros_like(z)
    with torch.no_grad():
        for i, lab in enumerate(segment.tolist()):
            if lab < 0:
                continue
            members = segment == lab
            center = z[members].mean(0)
            p = torch.softmax(center @ w + log_prior, dim=0)
            g = sum(p[j] * (w[:, j] - w[:, lab]) for j in range(k))
            expect[i] = g / int(members.sum()) / len(present)
    assert torch.allclose(z.grad, expect, atol=1e-12)
    assert torch.count_nonzero(z.grad[segment < 0]) == 0


def released_head_transcription(feat, segment, reduce_w, gain_w, gain_b, etf_unit, scale, log_prior, k, drop):
    """GPaCo/Seg UPerHead_ceco.forward + losses, written out for points instead of pixels."""
    x = feat @ reduce_w.T  # reduce: 1×1 conv, no bias
    x = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)  # BatchNorm, batch statistics, affine (1, 0)
    valid = segment != -1
    y_valid, out_valid = segment[valid], x[valid]
    y_onehot = F.one_hot(y_valid, k).to(x.dtype)
    features = y_onehot.T @ out_valid
    scene_label = torch.unique(y_valid)
    features = features[scene_label] / y_onehot.T.sum(1)[scene_label][:, None]
    img_x = torch.relu(features @ gain_w.T + gain_b)  # gain: Linear(128, 512) + ReLU
    f = F.normalize(img_x, dim=-1)
    logits = drop(f) @ etf_unit.T * scale  # img_cls: Dropout, Linear with unit-norm ETF rows, no bias
    onehot = F.one_hot(scene_label, k).to(x.dtype)
    return -(onehot * F.log_softmax(logits + log_prior, dim=1)).sum() / onehot.sum()


def test_released_head_equals_a_literal_transcription():
    k, d = 12, 20
    counts = torch.tensor([30.0, 1, 4, 0, 9, 2, 2, 11, 5, 3, 7, 1])  # scenes per class
    loss_fn = CenterCollapseLoss(d, k, class_prior=counts).train()
    assert loss_fn.reduce.out_dim == 128 and loss_fn.projection.out_dim == 512
    assert loss_fn.reduce.norm.training and not loss_fn.reduce.norm.affine
    assert list(loss_fn.parameters()) == []  # every map is frozen
    gen = torch.Generator().manual_seed(0)
    feat = torch.relu(torch.randn(400, d, generator=gen, dtype=torch.float64))  # post-ReLU, like MinkUNet's
    segment = torch.randint(-1, k, (400,), generator=gen)
    segment[segment == 3] = 4
    loss_fn = loss_fn.double()
    etf_unit = (loss_fn.etf / loss_fn.etf.norm(dim=0)).T  # (K, 512), unit rows
    prior = torch.log(counts.double() / counts.sum() + 1e-12)
    torch.manual_seed(5)
    got = loss_fn(feat, segment)
    torch.manual_seed(5)  # the same dropout mask
    expect = released_head_transcription(
        feat, segment, loss_fn.reduce.weight, loss_fn.projection.weight, loss_fn.projection.bias, etf_unit, 5.0,
        prior, k, lambda f: F.dropout(f, 0.1, training=True),
    )
    assert torch.allclose(got, expect, atol=1e-12)
    torch.manual_seed(6)
    assert not torch.allclose(loss_fn(feat, segment), expect, atol=1e-6)  # dropout is on in training
    assert torch.allclose(loss_fn.log_prior.double(), prior.float().double())


def test_center_heads_and_their_keys():
    released = CenterCollapseLoss.from_config({"prior": "none"}, 96, 200)
    assert released.reduce.out_dim == 128 and isinstance(released.dropout, nn.Dropout)
    eq4 = CenterCollapseLoss.from_config({"head": "paper_eq4"}, 96, 200)
    assert eq4.reduce is None and isinstance(eq4.dropout, nn.Identity) and eq4.log_prior is None
    assert eq4.projection.in_dim == 96 and eq4.projection.out_dim == 512
    none = CenterCollapseLoss.from_config({"reduce_dim": 256, "projection": "none", "prior": "none"}, 96, 200)
    assert none.projection.out_dim == 256 and none.etf.shape == (256, 200)
    with pytest.raises(ValueError, match="pooled feature dim >= 199, got 128"):
        CenterCollapseLoss.from_config({"projection": "none", "prior": "none"}, 96, 200)
    with pytest.raises(ValueError, match="unknown 'big'"):
        CenterCollapseLoss(96, 200, projection="big")
    with pytest.raises(ValueError, match="ceco: unknown key 'lambda'"):
        CenterCollapseLoss.from_config({"lambda": 0.4}, 96, 200)
    with pytest.raises(ValueError, match="ceco: unknown key 'weigth'; did you mean 'weight'"):
        CenterCollapseLoss.from_config({"weigth": 0.4}, 96, 200)
    with pytest.raises(ValueError, match="ceco.head must be one of \\['released', 'paper_eq4'\\] \\(got 'mine'\\)"):
        CenterCollapseLoss.from_config({"head": "mine"}, 96, 200)
    with pytest.raises(ValueError, match="ceco.prior must be one of"):
        CenterCollapseLoss.from_config({"prior": "pixels"}, 96, 200)


def _scene(root, split, name, labels):
    from pointseg.utils.io import save_npy

    save_npy(root / split / name / "coord.npy", np.zeros((len(labels), 3), np.float32))
    save_npy(root / split / name / "segment200.npy", np.asarray(labels, np.int64))


def test_prior_is_the_scene_frequency_from_stats_json(tmp_path):
    with pytest.raises(ValueError, match="needs data.root"):
        CenterCollapseLoss.from_config({}, 8, 4)
    scenes, points = [5, 1, 0, 2], [900, 3, 0, 80]
    (tmp_path / "stats.json").write_text(json.dumps(
        {"splits": {"train": {"class_point_counts": points, "class_scene_counts": scenes, "num_scenes": 5}}}
    ))
    by_scenes = CenterCollapseLoss.from_config({}, 8, 4, tmp_path)
    expect = torch.log(torch.tensor(scenes, dtype=torch.float64) / sum(scenes) + 1e-12).float()
    assert torch.allclose(by_scenes.log_prior, expect)
    by_points = CenterCollapseLoss.from_config({"prior": "points"}, 8, 4, tmp_path)
    assert torch.allclose(by_points.log_prior, torch.log(torch.tensor(points, dtype=torch.float64) / 983 + 1e-12).float())
    listed = CenterCollapseLoss.from_config({"prior": [1, 1, 1, 1]}, 8, 4)
    assert torch.allclose(listed.log_prior, torch.full((4,), -torch.log(torch.tensor(4.0))))
    (tmp_path / "stats.json").write_text(json.dumps({"splits": {"train": {"class_point_counts": [1, 2, 3, 4],
                                                                          "class_scene_counts": [1, "x", 3, 4]}}}))
    with pytest.raises(ValueError, match="stats.json: splits.train.class_scene_counts: counts must be non-negative integers, got 'x'"):
        CenterCollapseLoss.from_config({}, 8, 4, tmp_path)


def test_prior_of_a_folder_without_stats_json_is_counted_once_and_cached(tmp_path, caplog):
    """Pointcept's preprocessed folders have no stats.json: the default config still trains."""
    _scene(tmp_path, "train", "scene0000_00", [0, 0, 1, -1])
    _scene(tmp_path, "train", "scene0001_00", [0, 2, 2, 2])
    _scene(tmp_path, "train", "scene0002_00", [0])
    _scene(tmp_path, "val", "scene0003_00", [3])  # not a training scene
    with caplog.at_level("INFO"):
        first = CenterCollapseLoss.from_config({}, 8, 4, tmp_path)
    assert "counting" in caplog.text
    expect = torch.log(torch.tensor([3.0, 1, 1, 0]) / 5 + 1e-12)
    assert torch.allclose(first.log_prior, expect)
    caplog.clear()
    with caplog.at_level("INFO"):
        second = CenterCollapseLoss.from_config({}, 8, 4, tmp_path)
    assert "from the cache" in caplog.text and torch.equal(second.log_prior, first.log_prior)
    _scene(tmp_path, "train", "scene0004_00", [3])  # a changed scene list is counted again
    third = CenterCollapseLoss.from_config({}, 8, 4, tmp_path)
    assert torch.isfinite(third.log_prior).all() and float(third.log_prior[3]) > -5


def test_lowest_center_loss_of_each_head():
    """Free centers optimized through each head's frozen maps (K = 20 here; docs/ceco.md has
    K = 200): the released head reaches far below chance, the paper_eq4 head on post-ReLU
    features stays higher, and neither reaches the closed form of unconstrained unit vectors."""
    from pointseg.analysis.ceco_floor import chance_loss, etf_floor, lowest_center_loss

    k = 20
    released = CenterCollapseLoss(96, k)
    eq4 = CenterCollapseLoss(96, k, reduce_dim=0, dropout=0.0)
    chance = chance_loss(released)
    assert chance == pytest.approx(math.log(k))
    floor_released = lowest_center_loss(released, steps=300)
    floor_eq4 = lowest_center_loss(eq4, nonnegative=True, steps=300)
    print(f"K={k}: chance {chance:.3f}, released {floor_released:.3f}, paper_eq4 (features >= 0) "
          f"{floor_eq4:.3f}, unit vectors on the ETF {etf_floor(k, 5.0):.3f}")
    assert floor_released < 0.5 * chance
    assert etf_floor(k, 5.0) < floor_released < floor_eq4 < chance
    unconstrained = CenterCollapseLoss(k, k, reduce_dim=0, projection="none", dropout=0.0)
    assert lowest_center_loss(unconstrained, steps=300) == pytest.approx(etf_floor(k, 5.0), abs=0.02)
    # Through a reduce the centers span at most the backbone's feature dimension: a 32-d pooled
    # space fed by 8-d features cannot hold K = 20 classes on a simplex (19 dimensions); fed by
    # 32-d features it can.
    narrow = CenterCollapseLoss(8, k, reduce_dim=32, projection="none", dropout=0.0)
    wide = CenterCollapseLoss(32, k, reduce_dim=32, projection="none", dropout=0.0)
    assert lowest_center_loss(wide, steps=300) == pytest.approx(etf_floor(k, 5.0), abs=0.05)
    assert lowest_center_loss(narrow, steps=300) > etf_floor(k, 5.0) + 0.3


def test_ceco_undoes_minority_collapse_in_the_unconstrained_features_model():
    """K = 10 (5 majority classes of 1000 samples, 5 minority of 1: imbalance 1000), free features
    and a learned classifier with bias, CE + weight decay: the minority classifier vectors end up
    closer to each other than a simplex ETF's −1/9; adding CenterCollapseLoss (λ = 1) pulls them
    to −1/9 and lowers Std-cos of the class means."""
    from pointseg.analysis.ufm import etf_cosine, unconstrained_features_run

    torch.set_num_threads(1)
    ce = unconstrained_features_run(center_weight=0.0)
    ceco = unconstrained_features_run(center_weight=1.0)
    target = etf_cosine(10)
    print(f"minority classifier cosine: CE {ce.minority_classifier_cos:+.3f}, CE + CeCo "
          f"{ceco.minority_classifier_cos:+.3f} (ETF {target:+.3f}); Std-cos of the class means: CE "
          f"{ce.std_cos_means:.3f}, CE + CeCo {ceco.std_cos_means:.3f}; L_CR {ce.center_loss:.2f} -> {ceco.center_loss:.2f}")
    assert ce.minority_classifier_cos - target > 0.08  # minority collapse
    assert abs(ceco.minority_classifier_cos - target) < 0.3 * abs(ce.minority_classifier_cos - target)
    assert ceco.std_cos_means < ce.std_cos_means - 0.05
    assert ceco.center_loss < 0.1 < 2.0 < ce.center_loss


def test_fixed_parts_stay_fixed_under_training():
    torch.manual_seed(0)
    backbone = nn.Linear(3, 16)
    frozen = CenterCollapseLoss(16, 10, projection="frozen", proj_dim=32)  # the released head
    learned = CenterCollapseLoss(16, 10, projection="learned", proj_dim=32, classifier="learned")
    etf0 = frozen.etf.clone()
    proj0 = frozen.projection.weight.clone(), frozen.projection.bias.clone()
    reduce0 = frozen.reduce.weight.clone()
    lproj0 = learned.projection.weight.detach().clone()
    params = list(backbone.parameters()) + list(frozen.parameters()) + list(learned.parameters())
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=1e-2)
    x = torch.randn(100, 3)
    y = torch.randint(0, 10, (100,))
    for _ in range(3):
        opt.zero_grad()
        z = backbone(x)
        (frozen(z, y) + learned(z, y)).backward()
        opt.step()
    assert torch.equal(frozen.etf, etf0) and not frozen.etf.requires_grad
    assert torch.equal(frozen.projection.weight, proj0[0]) and torch.equal(frozen.projection.bias, proj0[1])
    assert torch.equal(frozen.reduce.weight, reduce0) and list(frozen.parameters()) == []
    assert not any(p.requires_grad for p in frozen.buffers())
    assert not torch.equal(learned.projection.weight, lproj0)  # the learned variant does train


def test_projection_identical_for_same_seed():
    a, b = CenterProjection(8, 32, "frozen", seed=5), CenterProjection(8, 32, "frozen", seed=5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


# --- two processes with global centers vs one process on the whole batch -------------------------

K, D_IN, D = 7, 4, 6


def _data():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 40, D_IN, generator=gen)
    y = torch.randint(-1, K, (2, 40), generator=gen)
    y[0][y[0] == 5] = 2  # class 5 only on rank 1
    y[1][y[1] == 6] = 1  # class 6 only on rank 0
    return x, y


def _model(global_centers: bool):
    torch.manual_seed(0)
    backbone = nn.Linear(D_IN, D)
    # No BatchNorm reduce (its batch statistics are per process) and no dropout (random).
    loss_fn = CenterCollapseLoss(
        D, K, reduce_dim=0, dropout=0.0, projection="learned", proj_dim=16, global_centers=global_centers
    )
    return backbone, loss_fn


def _loss_and_grads(backbone, loss_fn, x, y):
    loss = loss_fn(backbone(x), y)
    params = list(backbone.parameters()) + list(loss_fn.parameters())
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), list(grads)


def _worker(rank: int, rendezvous: str, out_path: str) -> None:
    # A file rendezvous: no TCP port to pick, so no race with other processes for a free one.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    x, y = _data()
    results = {}
    for mode in (True, False):
        backbone, loss_fn = _model(global_centers=mode)
        loss, grads = _loss_and_grads(backbone, loss_fn, x[rank], y[rank])
        for g in grads:  # what DDP does: average the gradients of all processes
            dist.all_reduce(g)
            g /= 2
        results[mode] = {"loss": loss, "grads": grads}
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()
    dist.destroy_process_group()


def test_global_centers_two_processes_match_one_process(tmp_path):
    out = tmp_path / "dist.pt"
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    results = torch.load(out, weights_only=True)
    x, y = _data()
    backbone, loss_fn = _model(global_centers=True)  # no process group: plain single process
    loss, grads = _loss_and_grads(backbone, loss_fn, x.reshape(-1, D_IN), y.reshape(-1))
    got = results[True]
    assert torch.allclose(got["loss"], loss, atol=1e-6)
    assert len(got["grads"]) == len(grads) == 4
    for g_dist, g_one in zip(got["grads"], grads):
        assert torch.allclose(g_dist, g_one, atol=1e-6)
    # Per-process centers (the default) are a different objective: the test can tell them apart.
    assert not torch.allclose(results[False]["loss"], loss, atol=1e-4)


def test_released_head_pools_before_standardizing_with_the_same_loss_gradient_and_statistics():
    # The fast path (pool the raw features, standardize the centers) against the literal order
    # (standardize every point, then pool): same loss, same feature gradient, same running stats.
    k, d, n = 9, 16, 700
    gen = torch.Generator().manual_seed(3)
    feat = torch.relu(torch.randn(n, d, generator=gen, dtype=torch.float64))
    segment = torch.randint(-1, k, (n,), generator=gen)
    fast = CenterCollapseLoss(d, k, dropout=0.0).double().train()
    slow = CenterCollapseLoss(d, k, dropout=0.0).double().train()
    slow.load_state_dict(fast.state_dict())
    x_fast, x_slow = feat.clone().requires_grad_(), feat.clone().requires_grad_()
    loss_fast = fast(x_fast, segment)
    centers, labels, _ = center_pool(slow.reduce(x_slow), segment, k)  # nn.BatchNorm1d on every point
    loss_slow = F.cross_entropy(slow.center_logits(centers), labels)
    loss_fast.backward()
    loss_slow.backward()
    assert torch.allclose(loss_fast, loss_slow, rtol=1e-12, atol=1e-12)
    assert torch.allclose(x_fast.grad, x_slow.grad, rtol=1e-9, atol=1e-14)
    assert torch.allclose(fast.reduce.norm.running_mean, slow.reduce.norm.running_mean, atol=1e-12)
    assert torch.allclose(fast.reduce.norm.running_var, slow.reduce.norm.running_var, atol=1e-12)
    assert int(fast.reduce.norm.num_batches_tracked) == int(slow.reduce.norm.num_batches_tracked) == 1


def test_presence_weighted_chance_by_hand():
    from pointseg.analysis.ceco_floor import chance_loss, presence_weighted_chance

    counts = torch.tensor([4.0, 1.0, 1.0])  # scenes holding each class
    branch = CenterCollapseLoss(8, 3, reduce_dim=0, projection="none", dropout=0.0, classifier="learned",
                                class_prior=counts)
    loss = (-torch.log_softmax(torch.log(counts / counts.sum()), 0)).tolist()  # ℓ_c of an uninformative center
    scenes = [[0, 1], [0], [0], [0, 2]]
    # All four scenes in every batch: classes 0, 1, 2 are always present.
    assert presence_weighted_chance(branch, scenes, 4, samples=50) == pytest.approx(sum(loss) / 3)
    # One scene per batch: {0, 1} or {0, 2} with probability 1/4 each, {0} with 1/2.
    expect = 0.25 * (loss[0] + loss[1]) / 2 + 0.25 * (loss[0] + loss[2]) / 2 + 0.5 * loss[0]
    assert presence_weighted_chance(branch, scenes, 1, samples=40000) == pytest.approx(expect, abs=0.01)
    assert chance_loss(branch) == pytest.approx(sum(loss) / 3)  # the class-uniform chance
