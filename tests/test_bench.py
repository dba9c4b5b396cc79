"""The benchmarks run in CI too, in miniature: every ``bench/*.py`` imports, the multiply-add
count of the distance-to-the-limit measurement matches a brute-force count of neighbour pairs, and
the per-phase profile of a training iteration runs on the project's model and trainer (it is the
benchmark most tied to their interfaces). Timings are not checked: that is `make bench`'s job."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from pointseg.sparse import SparseTensor, SubMConv3d

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        yield {p.stem: importlib.import_module(p.stem) for p in sorted(BENCH.glob("bench_*.py"))}
    finally:
        sys.path.remove(str(BENCH))


def test_every_benchmark_imports(bench_modules):
    assert {"bench_backbone", "bench_ceco", "bench_profile", "bench_contention"} <= set(bench_modules)
    assert all(callable(getattr(m, "main", None)) for m in bench_modules.values())


def test_multiply_adds_are_counted_from_the_neighbour_pairs(bench_modules):
    profile = bench_modules["bench_profile"]
    g = torch.Generator().manual_seed(0)
    occupied = (torch.rand(3, 6, 5, 4, generator=g) < 0.4).nonzero().to(torch.int32)  # three scenes
    x = SparseTensor(torch.rand(len(occupied), 3, generator=g), occupied)
    class ConvThenClassifier(torch.nn.Module):  # a backbone of one conv, then a point classifier
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.classifier = SubMConv3d(3, 4, kernel_size=3, backend="torch"), torch.nn.Linear(4, 5)

        def forward(self, x: SparseTensor) -> torch.Tensor:
            return self.classifier(self.conv(x).feats)

    model = ConvThenClassifier()
    records = profile.count_layers(model, x)
    sites = {tuple(c) for c in occupied.tolist()}
    pairs = sum((b, i + dx, j + dy, k + dz) in sites  # brute force over the 27 offsets
                for b, i, j, k in sites for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1))
    assert [(r["rows"], r["c_in"], r["c_out"], r["input_grad"]) for r in records] == [
        (pairs, 3, 4, False), (len(sites), 4, 5, True)]
    # forward + weight gradient for the first layer, + input gradient for the classifier
    assert profile.multiply_adds(records) == pairs * 3 * 4 * 2 + len(sites) * 4 * 5 * 3


def test_training_iteration_profile_runs_on_the_trainer(bench_modules, data_root, monkeypatch):
    profile = bench_modules["bench_profile"]
    monkeypatch.setattr(profile, "ITERATIONS", 1)
    monkeypatch.setattr(profile, "WARMUP", 0)
    result = profile.profile_synthetic(data_root, "torch")
    phases = result["phases_ms"]
    assert set(phases) == set(profile.PHASES)
    assert all(phases[p] > 0 for p in ("load", "voxelize", "forward", "loss terms", "backward"))
    assert result["multiply_adds_last_batch"] > 0 and result["fraction_of_dense"] > 0
