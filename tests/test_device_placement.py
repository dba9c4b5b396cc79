"""No tensor is left behind on the wrong device, checked without a GPU.

On a GPU run every tensor the code creates without ``device=`` lands on the CPU (the default
device), away from the data. Here the roles are swapped: the data stay on the CPU and the default
device is ``meta``, so a tensor created without ``device=`` is a meta tensor, and a dispatch mode
fails every op whose tensors are on more than one device (some CPU kernels would otherwise read a
meta index as garbage instead of refusing it). Stricter than CUDA, which lets a 0-dim CPU tensor
meet CUDA tensors. Module state is checked by moving a model to ``meta``: a tensor kept in a plain
attribute instead of a buffer does not move.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import tiny_config
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pointseg.data.collate import collate
from pointseg.evaluation.inference import vote
from pointseg.models.segmentor import build_segmentor
from pointseg.sparse import SparseTensor, available_backends

pytestmark = pytest.mark.usefixtures("tiny_backbone")

# The data's device; where a GPU is visible the checks also run with the data on CUDA.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The center-branch variants: frozen reduce / projection buffers, the ETF or a learned classifier,
# a log prior from the scenes' class counts, given as a list, or none; and the buffers each has.
CECO_VARIANTS = {
    "released": {},
    "paper_eq4": {"head": "paper_eq4"},
    "learned_listed_prior": {"projection": "learned", "classifier": "learned", "prior": [1.0] * 200},
}
CENTER_BUFFERS = {
    "released": {"etf", "log_prior", "reduce.weight", "projection.weight", "projection.bias"},
    "paper_eq4": {"etf", "projection.weight", "projection.bias"},
    "learned_listed_prior": {"log_prior", "reduce.weight"},
}


class _OneDevicePerOp(TorchDispatchMode):
    """Fails any op (forward or backward) whose tensor arguments are on more than one device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device.type for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        if len(devices) > 1:
            raise RuntimeError(f"{func}: tensors on {sorted(devices)}: one was made without device=")
        return func(*args, **kwargs)


@contextlib.contextmanager
def default_device_elsewhere() -> Iterator[None]:
    """Tensors made without ``device=`` go to ``meta``; mixing them with the data is an error."""
    with torch.device("meta"), _OneDevicePerOp():
        yield


def _tensors(obj: Any, path: str, seen: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor reachable from a module's attributes (not only its parameters and buffers)."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, torch.nn.Module):
        for name, value in vars(obj).items():
            yield from _tensors(value, f"{path}.{name}", seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}[{key!r}]", seen)
    elif isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]", seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # e.g. the kernel-map chunks
        for field in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, field.name), f"{path}.{field.name}", seen)


def _model(data_root, ceco: dict, backend: str = "torch", train: bool = True) -> torch.nn.Module:
    cfg = tiny_config(data_root)
    cfg.ceco.merge_with(ceco)
    cfg.model.backend = backend
    cfg.loss = [{"name": "cross_entropy", "weight": 1.0, "class_weight": [1.0] * 200}, {"name": "focal", "weight": 1.0, "alpha": [0.5] * 200}]
    torch.manual_seed(0)
    return build_segmentor(cfg, train=train)


def _batch(data_root, device: str = "cpu") -> dict[str, Any]:
    from pointseg.data import build_dataset

    cfg = tiny_config(data_root)
    data = build_dataset({**dict(cfg.data), "seed": 0}, "train", "train")
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate([data[0], data[1]]).items()}


def test_mixing_a_tensor_made_without_device_with_the_data_fails_here():
    """The check itself: code that would put a tensor on the CPU beside CUDA data is caught."""
    x = torch.arange(5.0)
    for misplaced in (lambda: x.index_select(0, torch.arange(3)), lambda: x + torch.ones(5)):
        with default_device_elsewhere(), pytest.raises(RuntimeError, match="made without device="):
            misplaced()
    with default_device_elsewhere():
        assert torch.equal(x.index_select(0, torch.arange(3, device=x.device)), x[:3])


@pytest.mark.parametrize("variant", CECO_VARIANTS)
def test_every_tensor_of_the_model_moves_with_it(data_root, variant):
    model = _model(data_root, CECO_VARIANTS[variant])
    names = {n for n, _ in model.named_buffers()}
    expected = {f"aux_losses.ceco.{b}" for b in CENTER_BUFFERS[variant]}
    expected |= {"criteria.terms.cross_entropy.class_weight", "criteria.terms.focal.alpha"}
    assert expected <= names, sorted(expected - names)
    model.to("meta")
    stray = [path for path, t in _tensors(model, "model", set()) if t.device.type != "meta"]
    assert not stray, f"tensors that do not move with the model: {stray}"


def _train_step_on_the_data_device(model: torch.nn.Module, batch: dict[str, Any]) -> None:
    device = batch["feat"].device
    model.to(device)
    with default_device_elsewhere():
        out = model(batch)
        out["loss"].backward()
    assert out["loss"].device == device and torch.isfinite(out["loss"])
    assert all(p.grad is None or p.grad.device == device for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", available_backends())
def test_training_forward_and_backward_make_every_tensor_on_the_data_device(data_root, backend, device):
    _train_step_on_the_data_device(_model(data_root, {}, backend), _batch(data_root, device))


@pytest.mark.parametrize("variant", [v for v in CECO_VARIANTS if v != "released"])
def test_every_center_branch_makes_its_tensors_on_the_data_device(data_root, variant):
    _train_step_on_the_data_device(_model(data_root, CECO_VARIANTS[variant]), _batch(data_root))


@pytest.mark.parametrize("backend", available_backends())
def test_inference_vote_makes_every_tensor_on_the_data_device(data_root, backend):
    model = _model(data_root, {}, backend, train=False).eval()
    rng = np.random.default_rng(0)
    grid = np.unique(rng.integers(0, 12, (300, 3)), axis=0).astype(np.int32)
    n = grid.shape[0]
    fragment = {"grid_coord": grid, "feat": rng.random((n, 3), dtype=np.float32), "inverse": np.arange(n)}
    with default_device_elsewhere():
        prob = vote([model], [[fragment]], n, 200, device="cpu")
    assert prob.device.type == "cpu" and torch.allclose(prob.sum(1), torch.ones(n))


@pytest.mark.parametrize("device", DEVICES)
def test_trainer_amp_step_makes_every_tensor_on_the_data_device(data_root, tmp_path, device):
    from pointseg.engine.trainer import Trainer

    cfg = tiny_config(data_root, iterations=2, validate=False, amp=True, grad_clip=1.0)
    trainer = Trainer(cfg, tmp_path / "run", device=device)
    try:
        batch = trainer._next_batch()  # loading and collating run on the host in every case
        trainer._next_batch = lambda: batch
        with default_device_elsewhere():
            losses = trainer.train_step()
            reduced = trainer.reduce_losses(losses)
        assert all(v.device == trainer.device for v in losses.values()) and np.isfinite(reduced["loss"])
        assert trainer.scaler.get_scale() == 2.0**16  # the step was taken (no overflow)
    finally:
        trainer.close()


def test_sparse_tensor_cache_of_the_torch_backend_is_on_the_data_device(data_root):
    """The kernel maps the torch backend caches (built once per stride) are on the data device."""
    model = _model(data_root, {}, "torch", train=False).eval()
    batch = _batch(data_root)
    captured: dict[str, SparseTensor] = {}
    # the stem's input carries the cache every later layer shares (the backbone starts a fresh one)
    model.backbone.stem.register_forward_pre_hook(lambda m, args: captured.__setitem__("x", args[0]))
    with default_device_elsewhere(), torch.no_grad():
        model(batch)
    cached = list(_tensors(captured["x"].cache, "cache", set()))
    assert sum(path.endswith(".crow") for path, _ in cached) >= 4  # the kernel maps of every stride
    assert all(t.device.type == "cpu" for _, t in cached), [p for p, t in cached if t.device.type != "cpu"]
