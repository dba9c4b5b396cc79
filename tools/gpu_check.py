"""The checks a first GPU machine owes the CUDA code paths: ``make gpu-check``.

1. the tests that have CUDA cases (AMP in float16 with the grad scaler, every tensor on the data's
   device), run with pytest on the GPU;
2. cross-backend agreement on CUDA: MinkUNet34C logits and gradients of every installed backend
   against the torch backend, one set of weights;
3. one MinkUNet34C training step at ScanNet size (a 2 cm room, ~150 k voxels, 200 classes): time
   and peak memory per installed backend, with and without AMP, with and without CeCo.

Writes ``bench/results/gpu.json``; at most about 5 minutes on one GPU. Needs torch and numpy only
(the torch backend is pure PyTorch); a MinkowskiEngine or spconv build is used when it imports.
A GPU machine that cannot install packages can be handed a MinkowskiEngine CUDA wheel built
elsewhere (``make minkowski-cuda-check``) with ``--minkowski-wheel``: it is unpacked beside the
check and imported from there (it must have been built against this machine's torch).
The tests also need pytest and OmegaConf: where they do not import, that part is reported as not
run. On a machine without a GPU it says so and exits 0.

    python tools/gpu_check.py [--budget-s 300] [--minkowski-wheel PATH.whl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

CUDA_TESTS = ["tests/test_engine_amp.py", "tests/test_device_placement.py"]
NUM_CLASSES = 200
STEP_REPEATS = 5


def use_wheel(path: Path, into: Path, module: str = "MinkowskiEngine") -> dict:
    """Make the wheel at ``path`` importable without pip (none may run on the GPU machine): a
    wheel is a zip of site-packages entries (PEP 427), so unpacking it onto ``sys.path`` is enough.
    Returns whether ``module`` then imports, and why not: a wheel built against another torch fails
    here with an undefined symbol, which is worth reporting rather than stopping the check."""
    with zipfile.ZipFile(path) as wheel:
        wheel.extractall(into)
    sys.path.insert(0, str(into))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(into), os.environ.get("PYTHONPATH")]))
    try:
        imported = importlib.import_module(module)
    except Exception as e:  # ImportError, or an OSError from the extension's shared libraries
        return {"wheel": path.name, "imports": False, "error": f"{type(e).__name__}: {e}"[:500]}
    cuda = getattr(imported, "is_cuda_available", lambda: None)()
    return {"wheel": path.name, "imports": True, "cuda_available": cuda}


def run_cuda_tests(timeout_s: float) -> dict:
    """The CUDA cases of the tests (``-k cuda``), in a pytest subprocess."""
    missing = [m for m in ("pytest", "omegaconf") if importlib.util.find_spec(m) is None]
    if missing:
        return {"run": False, "reason": f"not importable here: {', '.join(missing)}"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-k", "cuda", "-p", "no:cacheprovider", *CUDA_TESTS]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    except subprocess.TimeoutExpired:
        return {"run": True, "passed": False, "summary": f"timed out after {timeout_s:.0f} s"}
    lines = (out.stdout + out.stderr).strip().splitlines()
    return {"run": True, "passed": out.returncode == 0, "summary": lines[-1] if lines else "",
            "seconds": time.perf_counter() - start, "tail": lines[-30:] if out.returncode else []}


def _scene(device: str, voxel: float = 0.02):
    from bench_backbone import room_scene

    from pointseg.sparse import SparseTensor

    grid = torch.from_numpy(room_scene(voxel=voxel))
    coords = torch.cat([torch.zeros(len(grid), 1, dtype=torch.int32), grid], 1).to(device)
    feats = torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(0)).to(device)
    # labels: the room's surfaces split into classes by height and position (a long tail of sizes)
    segment = ((grid[:, 2] // 7) * 13 + grid[:, 0] // 29 + grid[:, 1] // 31) % NUM_CLASSES
    return SparseTensor(feats, coords), segment.long().to(device)


class _Net(torch.nn.Module):
    """Backbone + point classifier, and optionally the CeCo center branch (what the Segmentor
    builds for training, assembled here without a config)."""

    def __init__(self, backend: str, ceco: bool) -> None:
        super().__init__()
        from pointseg.losses.ceco import CenterCollapseLoss
        from pointseg.models import build_backbone

        self.backbone = build_backbone("MinkUNet34C", 3, backend=backend)
        self.classifier = torch.nn.Linear(self.backbone.feature_dim, NUM_CLASSES)
        counts = torch.arange(NUM_CLASSES, 0, -1).double()  # the log prior of a long tail
        self.center_loss = CenterCollapseLoss(self.backbone.feature_dim, NUM_CLASSES, class_prior=counts) if ceco else None

    def forward(self, x, segment: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        loss = torch.nn.functional.cross_entropy(self.classifier(feat).float(), segment)
        if self.center_loss is not None:
            loss = loss + self.center_loss.weight * self.center_loss(feat, segment)
        return loss


def backend_agreement(backends: list[str]) -> dict:
    """Logits and gradients of each backend against the torch backend on CUDA (same weights)."""
    from pointseg.models import build_backbone

    x, _ = _scene("cuda", voxel=0.05)
    torch.manual_seed(0)
    model = torch.nn.Sequential(build_backbone("MinkUNet34C", 3, backend="torch"), torch.nn.Linear(96, 20)).cuda()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for backend in backends:
        model.load_state_dict(state)
        model[0].set_backend(backend)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        model.train()
        model.zero_grad()
        model(x).square().mean().backward()
        results[backend] = (logits, torch.cat([p.grad.flatten() for p in model.parameters()]))

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    ref_logits, ref_grads = results["torch"]
    rows = {b: {"logits_rel_err": rel(lg, ref_logits), "grads_rel_err": rel(g, ref_grads)} for b, (lg, g) in results.items()}
    ok = all(r["logits_rel_err"] < 1e-4 and r["grads_rel_err"] < 1e-3 for r in rows.values())
    return {"voxels": len(x), "agree": ok, "tolerance": {"logits": 1e-4, "grads": 1e-3}, "backends": rows}


def training_step(backend: str, amp: bool, ceco: bool, x, segment) -> dict:
    """Median time of forward + backward + SGD step, and the peak memory over those steps."""
    from common import median_seconds

    torch.manual_seed(0)
    net = _Net(backend, ceco).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = net(x, segment)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds = median_seconds(step, STEP_REPEATS, sync=torch.cuda.synchronize)
    return {"backend": backend, "amp": amp, "ceco": ceco, "step_s": seconds,
            "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=300.0, help="stop starting new measurements after this")
    p.add_argument("--minkowski-wheel", type=Path, help="a MinkowskiEngine wheel to import from here, not installed")
    args = p.parse_args(argv)
    if args.minkowski_wheel is not None and not args.minkowski_wheel.is_file():
        p.error(f"--minkowski-wheel {args.minkowski_wheel}: no such file")
    if not torch.cuda.is_available():
        cuda = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU build"
        print(f"gpu-check: no GPU visible (torch {torch.__version__}, {cuda}); nothing to check here")
        return 0

    from common import write_results

    from pointseg.sparse import available_backends

    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    wheel = None
    if args.minkowski_wheel is not None:
        wheel = use_wheel(args.minkowski_wheel, Path(tempfile.mkdtemp(prefix="gpu-check-wheel-")))
        print("minkowski wheel:", json.dumps(wheel), flush=True)
    backends = available_backends()
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "backends": backends, "model": "MinkUNet34C", "classes": NUM_CLASSES, "minkowski_wheel": wheel}
    print(f"gpu-check on {result['device']}, torch {torch.__version__}, backends {backends}", flush=True)
    result["tests"] = run_cuda_tests(timeout_s=max(30.0, 0.4 * left()))
    print("tests:", result["tests"].get("summary") or result["tests"].get("reason"), flush=True)
    result["agreement"] = backend_agreement(backends)
    print("agreement:", json.dumps(result["agreement"]["backends"]), flush=True)
    x, segment = _scene("cuda")
    result["voxels"] = len(x)
    steps = []
    for backend in backends:
        for ceco in (False, True):
            for amp in (False, True):
                if left() < 0:
                    steps.append({"backend": backend, "amp": amp, "ceco": ceco, "skipped": "time budget spent"})
                    continue
                try:
                    row = training_step(backend, amp, ceco, x, segment)
                except Exception as e:  # one backend's failure is a result, not the end of the check
                    row = {"backend": backend, "amp": amp, "ceco": ceco, "error": f"{type(e).__name__}: {e}"[:500]}
                steps.append(row)
                print("step:", json.dumps(row), flush=True)
    result["training_step"] = steps
    result["seconds"] = time.perf_counter() - start
    path = write_results("gpu", result)
    print(f"gpu-check: wrote {path} in {result['seconds']:.0f} s")
    failed = (result["tests"].get("run") and not result["tests"].get("passed")) or not result["agreement"]["agree"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
