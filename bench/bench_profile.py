"""Where a training iteration's time goes, and how far the sparse convolutions are from dense GEMM.

Part 1, the synthetic config (``configs/synthetic/ceco.yaml``: MinkUNet14S, 5 cm, batch 2, CE +
CeCo) on a small generated set, with the trainer's own model, optimizer and dataset: per-phase
medians of data (load, augment, voxelize, collate), kernel maps, backbone forward (maps
included), loss terms, backward, optimizer step. Run for the config's backend and for ``torch``
(kernel maps are timed separately for ``torch`` only: spconv builds them inside its forward),
at the thread count the trainer would choose (``train.threads``).

Part 2, MinkUNet34C on the backbone benchmark's ScanNet-size room (~155 k voxels, 2 cm),
``THREADS_34C`` threads: forward and forward+backward of every available backend, interleaved
in one process (same weights), so the torch / spconv ratio holds on a busy machine too. The
multiply-adds of the forward+backward are counted from the kernel maps (every conv:
pairs × C_in × C_out for the forward, the same for the weight gradient and for the input
gradient, which the first conv does not need; down/up convs count their existing
parent-child pairs, the classifier M × C × classes), and dense GEMMs of the same shapes
(rows capped at ``DENSE_ROWS`` and scaled) are timed in the same run: the achieved GFLOP/s as a
fraction of the dense GFLOP/s is the distance to the limit.

Prints the tables and the lines of the README's performance table; writes
``bench/results/profile.json``. Wall-clock medians; on a machine with other work the ratios
(torch / spconv, achieved / dense) are the figures to trust.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import room_scene  # noqa: E402  (the backbone benchmark's ScanNet-size room)
from common import write_results  # noqa: E402

from pointseg.data.collate import collate  # noqa: E402
from pointseg.data.scene import load_scene  # noqa: E402
from pointseg.data.transforms import Voxelize  # noqa: E402
from pointseg.engine.config import load_config  # noqa: E402
from pointseg.engine.trainer import Trainer  # noqa: E402
from pointseg.models import build_backbone  # noqa: E402
from pointseg.sparse import SparseTensor, available_backends  # noqa: E402
from pointseg.sparse.backends import torch_backend  # noqa: E402
from pointseg.sparse.nn import DownConv3d, SubMConv3d, UpConv3d  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic" / "ceco.yaml"
SCENES, VERTICES = 6, 40000  # the demo's scene size; 6 scenes = 3 batches of 2, reused
ITERATIONS, WARMUP = 8, 2
THREADS_34C = 2  # as bench_backbone.py
REPEATS_34C = 3
DENSE_ROWS = 1 << 17
PHASES = ("load", "augment", "voxelize", "collate", "kernel maps", "forward", "loss terms", "backward", "optimizer")


def make_synthetic_data(out: Path, scenes: int = SCENES) -> Path:
    """A small preprocessed synthetic ScanNet (train split only) under ``out``; returns its root."""
    from pointseg.preprocessing.preprocess import preprocess_scannet200
    from pointseg.synthetic import generate_synthetic_scannet

    generate_synthetic_scannet(
        out / "raw", train=scenes, val=0, test=0, seed=0, vertices=VERTICES, workers=2, progress=False
    )
    preprocess_scannet200(out / "raw", out / "data", workers=2, progress=False)
    return out / "data"


def build_torch_maps(coords: torch.Tensor, levels: int = 5) -> None:
    """Every kernel map a MinkUNet forward builds on the torch backend (3³ subm per stride, down)."""
    x = SparseTensor(coords.new_zeros(coords.shape[0], 1, dtype=torch.float32), coords, validate=False)
    for level in range(levels):
        torch_backend.subm_map(x.coords, 3)
        if level < levels - 1:
            torch_backend.down_map(x)
            coarse = x.cache[("coords", x.stride * 2)]
            x = SparseTensor(x.feats[: coarse.shape[0]], coarse, x.stride * 2, x.cache, validate=False)


class _Clock:
    """Accumulates wall seconds per phase for one iteration."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)

    def time(self, phase: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.t[phase] += time.perf_counter() - start
        return out


def profile_synthetic(data_root: Path, backend: str) -> dict:
    """Per-phase median ms of a training iteration of the synthetic config on ``backend``."""
    overrides = [f"data.root={data_root}", f"model.backend={backend}", "train.validate=false",
                 "train.progress_bar=false", f"train.iterations={ITERATIONS + WARMUP}"]
    cfg = load_config(CONFIG, overrides)
    run = Path(tempfile.mkdtemp(prefix="bench_profile_run_"))
    try:
        trainer = Trainer(cfg, run, device="cpu")
    finally:
        shutil.rmtree(run, ignore_errors=True)
    model, ds = trainer.model.train(), trainer.train_set
    per_iter: list[dict[str, float]] = []
    voxels = []
    for it in range(WARMUP + ITERATIONS):
        clock = _Clock()
        samples = []
        for j in range(trainer.batch_size):
            index = (it * trainer.batch_size + j) % len(ds)
            data = clock.time("load", load_scene, ds.scenes[index % len(ds.scenes)])
            rng = ds.rng(index)
            for t in ds.transforms.transforms:
                data = clock.time("voxelize" if isinstance(t, Voxelize) else "augment", t, data, rng)
            samples.append(data)
        batch = clock.time("collate", collate, samples, cfg.data.get("max_points"))
        voxels.append(int(batch["coords"].shape[0]))
        if model.backbone.backend == "torch":
            clock.time("kernel maps", build_torch_maps, batch["coords"])
        def forward():
            feat = model.backbone(SparseTensor(batch["feat"], batch["coords"]))
            return feat, model.classifier(feat)

        feat, logits = clock.time("forward", forward)

        def loss_terms():
            terms = model.criteria(logits, batch["segment"])
            total = model.criteria.weighted_sum(terms)
            for aux in model.aux_losses.values():
                for term in aux.aux_terms(feat, logits, batch["segment"]).values():
                    total = total + aux.weight * term
            return total

        total = clock.time("loss terms", loss_terms)
        clock.time("backward", total.backward)

        def optimizer_step():
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.scheduler.step()

        clock.time("optimizer", optimizer_step)
        if it >= WARMUP:
            per_iter.append(dict(clock.t))
    records = count_layers(torch.nn.Sequential(model.backbone, model.classifier), SparseTensor(batch["feat"], batch["coords"]))
    model.zero_grad(set_to_none=True)
    phases = {p: 1e3 * statistics.median(it.get(p, 0.0) for it in per_iter) for p in PHASES}
    if model.backbone.backend != "torch":
        phases["kernel maps"] = None  # inside the forward
    data_ms = sum(phases[p] for p in ("load", "augment", "voxelize", "collate"))
    compute_ms = sum(phases[p] or 0.0 for p in ("forward", "loss terms", "backward", "optimizer"))
    totals = [sum(v for k, v in it.items() if k != "kernel maps") * 1e3 for it in per_iter]
    # Distance to the limit on the last batch: the backbone's forward + backward phases (the
    # latter also holds the loss terms' small backward) against dense GEMMs of the same shapes.
    dense_s = dense_seconds(records)
    conv_s = (phases["forward"] + phases["backward"]) / 1e3
    return {"backend": model.backbone.backend, "threads": torch.get_num_threads(), "phases_ms": phases,
            "data_ms": data_ms, "compute_ms": compute_ms, "iteration_ms": statistics.median(totals),
            "voxels_median": statistics.median(voxels), "last_batch_voxels": voxels[-1],
            "multiply_adds_last_batch": multiply_adds(records), "dense_s_last_batch": dense_s,
            "fraction_of_dense": dense_s / conv_s}


# --------------------------------------------------------------------------- MinkUNet34C


def count_layers(model: torch.nn.Module, x: SparseTensor) -> list[dict]:
    """One record per conv / classifier of a forward: rows (pairs), C_in, C_out, input grad needed."""
    records: list[dict] = []
    pairs_cache: dict[int, int] = {}

    def subm_pairs(t: SparseTensor, k: int) -> int:
        if k == 1:
            return len(t)
        if t.stride not in pairs_cache:
            pairs_cache[t.stride] = int((torch_backend.subm_neighbours(t.coords, k) < len(t)).sum())
        return pairs_cache[t.stride]

    def hook(module, inputs, output):
        t = inputs[0]
        if isinstance(module, SubMConv3d):
            rows = subm_pairs(t, module.kernel_size)
        elif isinstance(module, DownConv3d):
            rows = len(t)
        elif isinstance(module, UpConv3d):
            rows = len(output)
        else:  # the classifier
            rows = t.shape[0]
        c_in, c_out = (module.in_channels, module.out_channels) if hasattr(module, "in_channels") else (
            module.in_features, module.out_features)
        feats = t.feats if isinstance(t, SparseTensor) else t
        records.append({"rows": rows, "c_in": c_in, "c_out": c_out, "input_grad": bool(feats.requires_grad)})

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (SubMConv3d, DownConv3d, UpConv3d, torch.nn.Linear))]
    try:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
    finally:
        for h in handles:
            h.remove()
    return records


def multiply_adds(records: list[dict]) -> int:
    """Forward + weight gradient + input gradient (where needed) multiply-adds."""
    return sum(r["rows"] * r["c_in"] * r["c_out"] * (3 if r["input_grad"] else 2) for r in records)


def dense_seconds(records: list[dict], repeats: int = 3) -> float:
    """Time of dense GEMMs of the same shapes: forward, weight gradient, input gradient.

    Rows beyond ``DENSE_ROWS`` are timed at ``DENSE_ROWS`` and scaled (GEMM time is linear in
    them), which keeps the operands small.
    """
    timed: dict[tuple, float] = {}

    def gemm(kind: str, rows: int, c_in: int, c_out: int) -> float:
        capped = min(rows, DENSE_ROWS)
        key = (kind, capped, c_in, c_out)
        if key not in timed:
            x, w = torch.randn(capped, c_in), torch.randn(c_in, c_out)
            g = torch.randn(capped, c_out)
            a, b = {"forward": (x, w), "weight": (x.t(), g), "input": (g, w.t())}[kind]
            out = torch.empty(a.shape[0], b.shape[1])
            torch.mm(a, b, out=out)
            ts = []
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                ts.append(time.perf_counter() - start)
            timed[key] = statistics.median(ts)
        return timed[key] * rows / capped

    total = 0.0
    for r in records:
        kinds = ("forward", "weight", "input") if r["input_grad"] else ("forward", "weight")
        total += sum(gemm(k, r["rows"], r["c_in"], r["c_out"]) for k in kinds)
    return total


def profile_34c(threads: int = THREADS_34C, voxel: float = 0.02) -> dict:
    torch.set_num_threads(threads)
    grid = torch.from_numpy(room_scene(voxel=voxel))
    coords = torch.cat([torch.zeros(len(grid), 1, dtype=torch.int32), grid], 1)
    x = SparseTensor(torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(0)), coords)
    torch.manual_seed(0)
    backbone = build_backbone("MinkUNet34C", 3, backend="torch")
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.feature_dim, 200)).train()  # + point classifier
    backends = [b for b in ("torch", "spconv") if b in available_backends()]

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    times: dict[str, dict[str, list[float]]] = {b: {"forward": [], "forward_backward": []} for b in backends}
    for b in backends:  # warm-up: allocator, spconv's caches
        backbone.set_backend(b)
        forward_backward()
    for r in range(REPEATS_34C):
        for b in backends if r % 2 == 0 else backends[::-1]:
            backbone.set_backend(b)
            for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
                start = time.perf_counter()
                fn()
                times[b][name].append(time.perf_counter() - start)
    med = {b: {k: statistics.median(v) for k, v in t.items()} for b, t in times.items()}
    maps = []
    for _ in range(REPEATS_34C):
        start = time.perf_counter()
        build_torch_maps(coords)
        maps.append(time.perf_counter() - start)
    backbone.set_backend("torch")
    records = count_layers(model, x)
    macs = multiply_adds(records)
    dense_s = dense_seconds(records)
    torch_s = med["torch"]["forward_backward"]
    return {
        "voxels": len(grid), "threads": threads, "seconds": med, "kernel_maps_s": statistics.median(maps),
        "multiply_adds": macs, "gflop": 2 * macs / 1e9, "dense_s": dense_s,
        "achieved_gflops": 2 * macs / torch_s / 1e9, "dense_gflops": 2 * macs / dense_s / 1e9,
        "fraction_of_dense": dense_s / torch_s,
        "torch_over_spconv": (torch_s / med["spconv"]["forward_backward"]) if "spconv" in med else None,
        "spconv_fraction_of_dense": (dense_s / med["spconv"]["forward_backward"]) if "spconv" in med else None,
    }


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-34c", action="store_true", help="only the synthetic-config profile")
    parser.add_argument("--threads-34c", type=int, default=THREADS_34C, help="threads of the MinkUNet34C part")
    parser.add_argument("--voxel-34c", type=float, default=0.02, help="voxel size of the MinkUNet34C room (m)")
    args = parser.parse_args(argv)
    print(f"load average at start: {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="bench_profile_"))
    try:
        data_root = make_synthetic_data(work)
        cfg_backend = load_config(CONFIG)["model"]["backend"]
        backends = [cfg_backend] + (["torch"] if cfg_backend != "torch" else [])
        synthetic = [profile_synthetic(data_root, b) for b in backends]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big = None if args.skip_34c else profile_34c(args.threads_34c, args.voxel_34c)

    print("\nsynthetic config, one iteration (median ms; forward includes the kernel maps):\n")
    print("| phase | " + " | ".join(f"{r['backend']} ({r['threads']} thr)" for r in synthetic) + " |")
    print("| --- |" + " --- |" * len(synthetic))
    for p in PHASES:
        cells = ["–" if r["phases_ms"][p] is None else f"{r['phases_ms'][p]:.1f}" for r in synthetic]
        print(f"| {p} | " + " | ".join(cells) + " |")
    print("| **data / compute / iteration** | " + " | ".join(
        f"{r['data_ms']:.0f} / {r['compute_ms']:.0f} / {r['iteration_ms']:.0f}" for r in synthetic) + " |")
    print(f"\n(batch median {synthetic[0]['voxels_median']:.0f} voxels)")
    if big:
        print(f"\nMinkUNet34C, {big['voxels']} voxels, {big['threads']} threads (median s, interleaved):\n")
        print("| backend | forward | forward+backward |")
        print("| --- | --- | --- |")
        for b, t in big["seconds"].items():
            print(f"| {b} | {t['forward']:.2f} | {t['forward_backward']:.2f} |")
        print(f"\ntorch kernel maps (all strides): {1e3 * big['kernel_maps_s']:.0f} ms")
    print("\nREADME lines:")
    for r in synthetic:
        ph = r["phases_ms"]
        maps = "" if ph["kernel maps"] is None else f" (kernel maps {ph['kernel maps']:.0f})"
        print(f"| **Profile** of one training iteration, synthetic config (MinkUNet14S, 5 cm, batch 2, "
              f"{r['voxels_median'] / 1e3:.1f} k voxels), {r['threads']} thread(s), `{r['backend']}` | data "
              f"{r['data_ms']:.0f} ms (load {ph['load']:.0f}, augment {ph['augment']:.0f}, voxelize "
              f"{ph['voxelize']:.0f}, collate {ph['collate']:.0f}); forward {ph['forward']:.0f} ms{maps}, loss terms "
              f"{ph['loss terms']:.0f}, backward {ph['backward']:.0f}, optimizer {ph['optimizer']:.0f} | |")
    fractions = ", ".join(f"`{r['backend']}` {100 * r['fraction_of_dense']:.0f} %" for r in synthetic)
    if big:
        ratio = big["torch_over_spconv"]
        if ratio is not None:
            print(f"| same, both in one process, interleaved (`bench_profile.py`) | {ratio:.2f}× forward+backward "
                  f"(MinkUNet34C, {big['voxels'] / 1e3:.0f} k voxels, {big['threads']} thread(s)) | ≤ 1.0× "
                  f"{'✔' if ratio <= 1.0 else '✘'} |")
        spconv = big["spconv_fraction_of_dense"]
        spconv_text = "" if spconv is None else f", spconv {100 * spconv:.0f} %"
        print(f"| **Distance to the limit**: MinkUNet34C forward+backward, multiply-adds counted from the kernel maps "
              f"(forward, weight gradient, input gradient) against dense GEMMs of the same shapes timed in the same run "
              f"| {big['multiply_adds'] / 1e9:.0f} G MAC ({big['voxels'] / 1e3:.0f} k voxels, {big['threads']} "
              f"thread(s)); `torch` reaches {100 * big['fraction_of_dense']:.0f} % of the dense GEMM rate "
              f"({big['achieved_gflops']:.0f} of {big['dense_gflops']:.0f} GFLOP/s){spconv_text}; MinkUNet14S on a "
              f"synthetic batch (forward + backward phases): {fractions} | |")
    else:
        print(f"| distance to the limit, MinkUNet14S on a synthetic batch (forward + backward phases) | {fractions} | |")
    print(f"\nload average at end: {load_average()}")
    result = {"synthetic": synthetic, "minkunet34c": big, "load_average_end": load_average()}
    write_results("profile", result)
    return result


if __name__ == "__main__":
    main()
