"""Tiny runs for the engine tests: a few-channel MinkUNet, scenes of five coloured boxes, a config.

Plain helpers, importable from spawned processes too; the fixtures using them are in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pointseg.engine.config import config_from_dict, editable
from pointseg.models import BACKBONES
from pointseg.models.minkunet import MinkUNet14


class MinkUNetTiny(MinkUNet14):
    """The real MinkUNet code at a few channels, so a training step takes milliseconds."""

    INIT_DIM = 8
    PLANES = (8, 16, 16, 16, 16, 16, 16, 16)


TINY = "MinkUNetTiny"


def register_tiny_backbone() -> None:
    """Make ``model.name: MinkUNetTiny`` buildable (in this process; call it in spawned ones too)."""
    BACKBONES.setdefault(TINY, MinkUNetTiny)


class FixtureTiny(MinkUNet14):
    """The backbone the checkpoint fixtures of tests/fixtures were made with (model.name
    MinkUNetTiny there, at fewer channels than :class:`MinkUNetTiny`)."""

    INIT_DIM = 4
    PLANES = (4, 8, 8, 8, 8, 8, 8, 8)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def predicts_as_recorded(monkeypatch, checkpoint: str, expected: str):
    """Load ``tests/fixtures/<checkpoint>`` for inference, run it on the inputs stored in
    ``<expected>.npz`` and check it gives the stored logits and features; ``(model, cfg, out,
    expected arrays)``. Same weights, same graph: only the float summation order may differ
    between CPUs (SIMD width of the GEMM kernels), so the comparison is to float32 rounding
    rather than bit for bit; a wrong weight mapping would be off by orders of magnitude more."""
    from pointseg.engine.checkpoint import load_for_inference

    monkeypatch.setitem(BACKBONES, TINY, FixtureTiny)
    model, cfg = load_for_inference(FIXTURES / checkpoint)
    arrays = np.load(FIXTURES / expected, allow_pickle=False)
    with torch.no_grad():
        out = model({"coords": torch.from_numpy(arrays["coords"]), "feat": torch.from_numpy(arrays["feat"])})
    np.testing.assert_allclose(out["logits"].numpy(), arrays["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["feat"].numpy(), arrays["feat_out"], rtol=1e-5, atol=1e-6)
    return model, cfg, out, arrays


CLASSES = (0, 3, 7, 42, 150)  # a few of the 200 class indices


def write_scene(folder: Path, seed: int, points: int = 1200) -> None:
    """A 1 m room-ish scene: one box per class, each class with its own colour (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    per = points // len(CLASSES)
    coord, color, segment = [], [], []
    for j, cls in enumerate(CLASSES):
        low = np.array([0.2 * j, 0.0, 0.0]) + rng.uniform(0, 0.02, 3)
        coord.append(low + rng.uniform(0, [0.18, 0.6, 0.5], (per, 3)))
        base = np.array([(50 * j) % 255, (90 * j + 30) % 255, (170 * j + 60) % 255])
        color.append(np.clip(base + rng.normal(0, 8, (per, 3)), 0, 255))
        segment.append(np.full(per, cls))
    segment = np.concatenate(segment)
    segment[rng.random(segment.size) < 0.05] = -1  # some unlabelled points
    normal = rng.normal(size=(segment.size, 3))
    np.save(folder / "coord.npy", np.concatenate(coord).astype(np.float32))
    np.save(folder / "color.npy", np.concatenate(color).astype(np.uint8))
    np.save(folder / "normal.npy", (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32))
    np.save(folder / "segment200.npy", segment.astype(np.int64))
    np.save(folder / "instance.npy", np.arange(segment.size, dtype=np.int64) // per)


def make_data(root: Path, train: int = 2, val: int = 1) -> Path:
    for i in range(train):
        write_scene(root / "train" / f"scene{i:04d}_00", seed=i)
    for i in range(val):
        write_scene(root / "val" / f"scene{100 + i:04d}_00", seed=100 + i)
    return root


def tiny_config(root: Path, **train: object):
    """MinkUNetTiny on the torch backend, CE + CeCo, light augmentation, 5 cm voxels: a mutable
    copy of the loaded config (tests adjust it; the trainer or builder that takes it checks it)."""
    cfg = {
        "seed": 3,
        "data": {
            "root": str(root),
            "seed": 3,
            "voxel_size": 0.05,
            "features": ["color"],
            "batch_size": 1,
            "num_workers": 0,
            "train_transforms": [
                {"name": "RandomRotate", "z": [-0.3, 0.3]},
                {"name": "ChromaticJitter", "p": 0.5, "std": 0.01},
                {"name": "NormalizeColor"},
                {"name": "ToFeature"},
                {"name": "Voxelize"},
            ],
            "test_transforms": [{"name": "NormalizeColor"}, {"name": "ToFeature"}, {"name": "Voxelize"}],
        },
        "model": {"name": TINY, "backend": "torch", "in_channels": 3, "num_classes": 200},
        "ceco": {"enabled": True, "weight": 0.4},
        "loss": [{"name": "cross_entropy", "weight": 1.0}],
        "optim": {"name": "SGD", "lr": 0.05},
        "sched": {"name": "poly", "warmup_iters": 2},
        # threads null: leave the test's own thread setting (one thread, see conftest.tiny_backbone)
        "train": {"iterations": 6, "log_every": 1, "val_every": 0, "save_every": 3, "progress_bar": False,
                  "threads": None},
    }
    cfg["train"].update(train)
    return editable(config_from_dict(cfg, source="test config"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_tiny_run(root: Path, n_points: int = 400) -> tuple[Path, list[Path], np.ndarray]:
    """One labelled val scene and two untrained checkpoints of the synthetic baseline config."""
    from pointseg.engine.config import load_config, to_plain_dict
    from pointseg.models.segmentor import build_segmentor
    from pointseg.utils.io import save_npy

    rng = np.random.default_rng(0)
    coord = rng.uniform(0, 2, (n_points, 3)).astype(np.float32)
    seg = (coord[:, 0] > 1) * 3 + (coord[:, 1] > 1) * 1 + (coord[:, 2] > 1) * 60  # classes 0,1,3,4,60,...
    seg[rng.random(n_points) < 0.05] = -1
    normal = rng.normal(size=(n_points, 3))
    scene = root / "data" / "val" / "scene0000_00"
    save_npy(scene / "coord.npy", coord)
    save_npy(scene / "color.npy", rng.integers(0, 256, (n_points, 3)).astype(np.uint8))
    save_npy(scene / "normal.npy", (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32))
    save_npy(scene / "segment200.npy", seg.astype(np.int64))
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "baseline.yaml", [f"data.root={root / 'data'}", "model.backend=torch"])
    torch.manual_seed(0)
    state = build_segmentor(cfg, train=True).state_dict()
    ckpts = []
    for it in (100, 200):
        state["classifier.weight"] = torch.randn_like(state["classifier.weight"])
        ckpts.append(root / f"ckpt_{it}.pth")
        torch.save({"format": 2, "model": state, "config": to_plain_dict(cfg), "iteration": it}, ckpts[-1])
    return root / "data", ckpts, seg
