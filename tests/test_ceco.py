"""CeCo: the simplex ETF (Eq. 2), center pooling (Eq. 3), the gradient of L_CR (Eq. 8),
global centers across processes, and that fixed parts stay fixed under training."""

from __future__ import annotations

import json

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
    loss_fn = CenterCollapseLoss(d, k, projection="none", normalize=False, alpha=5.0, class_prior=prior)
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


def test_center_loss_defaults_and_value():
    loss_fn = CenterCollapseLoss(96, 200)
    assert loss_fn.weight == 0.4 and loss_fn.etf.shape == (512, 200)
    assert not loss_fn.etf.requires_grad and list(loss_fn.parameters()) == []
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(300, 96, generator=gen)
    segment = torch.randint(-1, 200, (300,), generator=gen)
    centers, labels, _ = center_pool(feat, segment, 200)
    h = F.normalize(F.relu(centers @ loss_fn.projection.weight.T + loss_fn.projection.bias), dim=1)
    expect = F.cross_entropy(h @ loss_fn.etf, labels)
    assert torch.allclose(loss_fn(feat, segment), expect, atol=1e-6)
    assert "etf" in loss_fn.state_dict() and "projection.weight" in loss_fn.state_dict()


def test_center_loss_config_errors_and_prior(tmp_path):
    with pytest.raises(ValueError, match="projection=none needs feature_dim >= num_classes - 1"):
        CenterCollapseLoss(96, 200, projection="none")
    with pytest.raises(ValueError, match="unknown 'big'"):
        CenterCollapseLoss(96, 200, projection="big")
    with pytest.raises(ValueError, match="unknown keys \\['lambda'\\]"):
        CenterCollapseLoss.from_config({"lambda": 0.4}, 96, 200)
    with pytest.raises(ValueError, match="needs data.root"):
        CenterCollapseLoss.from_config({"logit_adjust": True}, 8, 4)
    (tmp_path / "stats.json").write_text(json.dumps({"splits": {"train": {"class_point_counts": [1, 3, 0, 4]}}}))
    loss_fn = CenterCollapseLoss.from_config({"enabled": True, "logit_adjust": True, "proj_dim": 16}, 8, 4, tmp_path)
    assert torch.allclose(loss_fn.log_prior, torch.log(torch.tensor([1.0, 3.0, 1.0, 4.0]) / 9))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stats.json").write_text(json.dumps({"splits": {"val": {}}}))
    with pytest.raises(ValueError, match="stats.json: no 'splits.train.class_point_counts'"):
        CenterCollapseLoss.from_config({"logit_adjust": True}, 8, 4, tmp_path / "bad")
    listed = CenterCollapseLoss.from_config({"logit_adjust": [1, 1, 1, 1], "proj_dim": 16}, 8, 4)
    assert torch.allclose(listed.log_prior, torch.full((4,), -torch.log(torch.tensor(4.0))))


def test_fixed_parts_stay_fixed_under_training():
    torch.manual_seed(0)
    backbone = nn.Linear(3, 16)
    frozen = CenterCollapseLoss(16, 10, projection="frozen", proj_dim=32)
    learned = CenterCollapseLoss(16, 10, projection="learned", proj_dim=32, classifier="learned")
    etf0 = frozen.etf.clone()
    proj0 = frozen.projection.weight.clone(), frozen.projection.bias.clone()
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
    loss_fn = CenterCollapseLoss(D, K, projection="learned", proj_dim=16, global_centers=global_centers)
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
