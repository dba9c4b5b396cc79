"""MinkUNet: layer spec, backend agreement with one set of weights, backend-neutral checkpoints.

The backbone ends at its last decoder features; the tests that compare outputs put the
examples' final 1×1 conv (a Linear with bias, the Segmentor's point classifier) on top, so logits
and their gradients are compared as before."""

from __future__ import annotations

import pytest
import torch

from pointseg.models import BACKBONES, build_backbone, to_points
from pointseg.models.blocks import Bottleneck
from pointseg.sparse import BACKENDS, SparseTensor, available_backends, is_available


def surface_scene(seed: int, n_planes: int = 6, size: int = 24) -> SparseTensor:
    """Two batch entries of axis-aligned rectangles (a voxelized indoor scene in miniature)."""
    g = torch.Generator().manual_seed(seed)
    pts = []
    for b in range(2):
        for _ in range(n_planes):
            axis = int(torch.randint(3, (1,), generator=g))
            lo = torch.randint(0, size // 2, (3,), generator=g)
            hi = lo + torch.randint(4, size // 2, (3,), generator=g)
            hi[axis] = lo[axis]
            axes = [torch.arange(int(lo[d]), int(hi[d]) + 1) for d in range(3)]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            pts.append(torch.cat([torch.full((len(grid), 1), b), grid], 1))
    coords = torch.unique(torch.cat(pts), dim=0).to(torch.int32)
    coords = coords[torch.randperm(len(coords), generator=g)].contiguous()
    feats = torch.rand(len(coords), 3, generator=g) - 0.5
    return SparseTensor(feats, coords)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def count_params_from_spec(planes, layers, block, in_channels, num_classes, stem_kernel, init_dim=32):
    """Parameter count from the MinkUNet layer list, written independently of the model code."""
    exp = 4 if block == "bottleneck" else 1

    def conv(k, cin, cout):
        return k**3 * cin * cout

    def bn(c):
        return 2 * c

    def block_params(cin, p):
        if block == "basic":
            n = conv(3, cin, p) + bn(p) + conv(3, p, p) + bn(p)
        else:
            n = conv(1, cin, p) + bn(p) + conv(3, p, p) + bn(p) + conv(1, p, 4 * p) + bn(4 * p)
        if cin != p * exp:
            n += conv(1, cin, p * exp) + bn(p * exp)
        return n

    total = conv(stem_kernel, in_channels, init_dim) + bn(init_dim)
    c, skips = init_dim, [init_dim]
    for i in range(4):
        total += conv(2, c, c) + bn(c)
        for j in range(layers[i]):
            total += block_params(c if j == 0 else planes[i] * exp, planes[i])
        c = planes[i] * exp
        skips.append(c)
    for i in range(4, 8):
        total += conv(2, c, planes[i]) + bn(planes[i])
        cin = planes[i] + skips[7 - i]
        for j in range(layers[i]):
            total += block_params(cin if j == 0 else planes[i] * exp, planes[i])
        c = planes[i] * exp
    return total + c * num_classes + num_classes


class WithClassifier(torch.nn.Module):
    """Backbone + the examples' final 1×1 conv: what the MinkowskiEngine examples call MinkUNet."""

    def __init__(self, name: str, in_channels: int, num_classes: int, backend: str, **kw) -> None:
        super().__init__()
        self.backbone = build_backbone(name, in_channels, backend, **kw)
        self.classifier = torch.nn.Linear(self.backbone.feature_dim, num_classes)

    def forward(self, x: SparseTensor) -> dict:
        feat = self.backbone(x)
        return {"feat": feat, "logits": self.classifier(feat)}

    def set_backend(self, name: str) -> "WithClassifier":
        self.backbone.set_backend(name)
        return self

    @property
    def backend(self) -> str:
        return self.backbone.backend


def test_minkunet34c_parameter_count_matches_minkowskiengine():
    model = WithClassifier("MinkUNet34C", 3, 20, backend="torch", stem_kernel=5)
    n = sum(p.numel() for p in model.parameters())
    spec = count_params_from_spec(
        (32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2), "basic", 3, 20, 5
    )
    assert n == spec == 37_856_052  # ME examples' MinkUNet34C(3, 20): 37.86 M
    assert model.backbone.feature_dim == 96
    with_bias = [m for m in model.backbone.modules() if getattr(m, "bias", None) is not None]
    assert all(isinstance(m, torch.nn.BatchNorm1d) for m in with_bias)


@pytest.mark.parametrize("name", ["MinkUNet14A", "MinkUNet18B", "MinkUNet34A", "MinkUNet50"])
def test_variant_parameter_counts(name):
    cls = BACKBONES[name]
    block = "bottleneck" if cls.BLOCK is Bottleneck else "basic"
    model = WithClassifier(name, 6, 13, backend="torch")
    assert sum(p.numel() for p in model.parameters()) == count_params_from_spec(
        cls.PLANES, cls.LAYERS, block, 6, 13, 3
    )
    assert model.backbone.feature_dim == cls.PLANES[7] * cls.BLOCK.expansion


def test_forward_shapes_init_and_bottleneck():
    torch.manual_seed(0)
    x = surface_scene(1, n_planes=3, size=16)
    model = build_backbone("MinkUNet50", 3, backend="torch").eval()
    with torch.no_grad():
        feat = model(x)
    assert feat.shape == (len(x), 384) and torch.isfinite(feat).all()
    bn = model.stem[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0) and bn.momentum == 0.1
    slow = build_backbone("MinkUNet14A", 3, backend="torch", bn_momentum=0.02)
    assert {m.momentum for m in slow.modules() if isinstance(m, torch.nn.BatchNorm1d)} == {0.02}


@pytest.fixture(scope="module")
def scene() -> SparseTensor:
    return surface_scene(0)


@pytest.mark.skipif(len(available_backends()) < 2, reason="needs two backends")
def test_same_logits_and_gradients_on_every_backend(scene):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = WithClassifier("MinkUNet34C", 3, 20, backend="torch")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for backend in available_backends():
        model.load_state_dict(state)  # a training forward moves the BN running statistics
        model.set_backend(backend)
        assert model.backend == backend
        model.eval()
        with torch.no_grad():
            logits = model(scene)["logits"]
        model.train()
        model.zero_grad()
        model(scene)["logits"].square().mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results[backend] = (logits, grads)
    ref_logits, ref_grads = results["torch"]
    for backend, (logits, grads) in results.items():
        assert rel_err(logits, ref_logits) < 1e-4, backend
        assert rel_err(grads, ref_grads) < 1e-3, backend


@pytest.mark.parametrize(
    "target",
    [pytest.param(b, marks=pytest.mark.skipif(not is_available(b), reason=f"{b} not installed")) for b in BACKENDS],
)
def test_checkpoint_is_backend_neutral(scene, tmp_path, target):
    torch.manual_seed(1)
    src = WithClassifier("MinkUNet14A", 3, 7, backend="torch").eval()
    with torch.no_grad():
        expected = src(scene)["logits"]
    torch.save(src.state_dict(), tmp_path / "model.pth")
    dst = WithClassifier("MinkUNet14A", 3, 7, backend=target).eval()
    dst.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))
    with torch.no_grad():
        got = dst(scene)["logits"]
    assert rel_err(got, expected) < 1e-4


def test_repeated_forward_on_one_input_reuses_nothing_stale(scene):
    model = build_backbone("MinkUNet14A", 3, backend="auto").eval()
    with torch.no_grad():
        a = model(scene)
        b = model(scene)
    assert torch.equal(a, b)


def test_to_points():
    voxel = torch.arange(12.0).view(4, 3)
    inverse = torch.tensor([3, 0, 0, 2, 1, 3])
    assert torch.equal(to_points(voxel, inverse), voxel[[3, 0, 0, 2, 1, 3]])
    with pytest.raises(IndexError, match="there are 4"):
        to_points(voxel, torch.tensor([0, 4]))


def test_bad_inputs(scene):
    model = build_backbone("MinkUNet14A", 4, backend="torch")
    with pytest.raises(ValueError, match="input has 3 feature channels, layer expects 4"):
        model(scene)
    with pytest.raises(KeyError, match="unknown backbone 'MinkUNet99'"):
        build_backbone("MinkUNet99", 3)
    with pytest.raises(KeyError, match="unknown sparse backend 'cudnn'"):
        build_backbone("MinkUNet14A", 3, backend="cudnn")
    if not is_available("minkowski"):
        with pytest.raises(ImportError, match="MinkowskiEngine"):
            model.set_backend("minkowski")
    with pytest.raises(TypeError, match="expected a SparseTensor"):
        model(scene.feats)
