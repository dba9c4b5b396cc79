"""Two CPU processes (gloo) train end to end under DistributedDataParallel, as torchrun would run them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_helpers import read_jsonl, register_tiny_backbone, tiny_config

pytestmark = pytest.mark.usefixtures("tiny_backbone")

ITERATIONS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, run: str, out: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    )
    torch.set_num_threads(1)
    register_tiny_backbone()
    from pointseg.engine.distributed import cleanup
    from pointseg.engine.trainer import Trainer

    cfg = tiny_config(Path(root), iterations=ITERATIONS, save_every=2, val_every=ITERATIONS)
    cfg.ceco.global_centers = True  # class sums all-reduced across the two processes
    cfg.train.sync_bn = True  # CPU: kept as BatchNorm with a notice
    try:
        trainer = Trainer(cfg, run, device="cpu")
        assert trainer.dist.world_size == world and trainer.dist.rank == rank
        summary = trainer.train()
        # test output only (the trainer itself writes nothing on rank 1)
        torch.save({"state": trainer.model.state_dict(), "summary": summary}, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()


def test_two_process_gloo_run_end_to_end(data_root, tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(data_root), str(run), str(out)), nprocs=2, join=True)

    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for k, v in r0["state"].items():  # DDP keeps the replicas identical
        if not k.endswith("running_mean") and not k.endswith("running_var") and not k.endswith("num_batches_tracked"):
            assert torch.equal(v, r1["state"][k]), k
    assert r0["summary"]["iteration"] == r1["summary"]["iteration"] == ITERATIONS
    # the logged losses are means over the processes, so both report the same numbers
    assert r0["summary"]["losses"] == pytest.approx(r1["summary"]["losses"])
    assert r0["summary"]["best_miou"] == r1["summary"]["best_miou"]  # val confusion summed over processes

    log = read_jsonl(run / "log.jsonl")  # one writer: no duplicated lines
    assert [r["iteration"] for r in log] == list(range(1, ITERATIONS + 1))
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert [r["iteration"] for r in read_jsonl(run / "val.jsonl")] == [ITERATIONS]
    ckpt = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    assert ckpt["iteration"] == ITERATIONS and not any(k.startswith("module.") for k in ckpt["model"])


def test_sync_batchnorm_conversion_keeps_sparse_layers_and_state_dict_keys(data_root):
    from pointseg.engine.distributed import SparseSyncBatchNorm, convert_sync_batchnorm
    from pointseg.models.segmentor import build_segmentor

    cfg = tiny_config(data_root)
    torch.manual_seed(0)
    plain = build_segmentor(cfg, train=True)
    synced = convert_sync_batchnorm(build_segmentor(cfg, train=True))
    synced.load_state_dict(plain.state_dict())  # same keys, strict
    assert any(isinstance(m, SparseSyncBatchNorm) for m in synced.modules())
    assert not any(type(m).__name__ == "BatchNorm" for m in synced.modules())
    cells = torch.randperm(32**3, generator=torch.Generator().manual_seed(0))[:600]
    xyz = torch.stack([cells // 1024, cells // 32 % 32, cells % 32], dim=1)
    batch = {
        "coords": torch.cat([torch.zeros(600, 1, dtype=torch.long), xyz], dim=1).int(),
        "feat": torch.rand(600, 3),
        "segment": torch.randint(-1, 5, (600,)),
    }
    # outside a process group SyncBatchNorm normalizes like BatchNorm
    torch.manual_seed(1)  # the same dropout mask in the center branch
    out_plain = plain(batch)
    torch.manual_seed(1)
    out_synced = synced(batch)
    assert torch.allclose(out_plain["loss"], out_synced["loss"], atol=1e-6)
    plain.eval(), synced.eval()
    assert torch.allclose(plain(batch)["logits"], synced(batch)["logits"], atol=1e-6)
