"""Two nodes as a multi-machine run starts them: two torchrun launches (node ranks 0 and 1, one
process each) meeting at a static rendezvous on 127.0.0.1, training over gloo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import read_jsonl, tiny_config
from omegaconf import OmegaConf

pytestmark = pytest.mark.usefixtures("tiny_backbone")

ITERATIONS = 3
HERE = Path(__file__).resolve().parent
TIMEOUT_S = 600  # both nodes start a Python with torch; a hung rendezvous must not hang CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(node_rank: int, port: int, config: Path, run: Path, out: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
        "GLOO_SOCKET_IFNAME": "lo",  # gloo's pairs on the loopback, as two machines would on their NIC
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node_rank),
        "--rdzv-backend", "static", "--master-addr", "127.0.0.1", "--master-port", str(port),
        "--max-restarts", "0",
        str(HERE / "multinode_worker.py"), str(config), str(run), str(out),
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_nodes_train_to_identical_weights(data_root, tmp_path):
    cfg = tiny_config(data_root, iterations=ITERATIONS, save_every=ITERATIONS, val_every=ITERATIONS)
    cfg.ceco.global_centers = True  # class sums all-reduced across the nodes
    config, run, out = tmp_path / "tiny.yaml", tmp_path / "run", tmp_path / "out"
    config.write_text(OmegaConf.to_yaml(cfg))
    out.mkdir()
    port = _free_port()
    nodes = [_launch(rank, port, config, run, out) for rank in (0, 1)]
    logs = []
    try:
        for node in nodes:
            logs.append(node.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for node in nodes:
            node.kill()
    for rank, (node, log) in enumerate(zip(nodes, logs)):
        assert node.returncode == 0, f"node {rank} exited with {node.returncode}:\n{log[-4000:]}"

    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["info"] == {"rank": 0, "world_size": 2, "group_rank": 0, "local_rank": 0}
    assert r1["info"] == {"rank": 1, "world_size": 2, "group_rank": 1, "local_rank": 0}
    # Identical replicas (BatchNorm statistics are each node's own, as without SyncBatchNorm)
    per_node = ("running_mean", "running_var", "num_batches_tracked")
    compared = 0
    for k, v in r0["state"].items():
        if not k.endswith(per_node):
            assert torch.equal(v, r1["state"][k]), k
            compared += 1
    assert compared > 50
    initial = torch.load(run / "checkpoints" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(initial[k], v) for k, v in r0["state"].items())  # rank 0 saved what it holds
    assert r0["summary"]["iteration"] == r1["summary"]["iteration"] == ITERATIONS
    assert r0["summary"]["losses"] == pytest.approx(r1["summary"]["losses"])
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, ITERATIONS + 1))
    # the two nodes saw different scenes (the sampler shards by rank): BatchNorm statistics differ
    assert not torch.equal(r0["state"]["backbone.stem.1.running_mean"], r1["state"]["backbone.stem.1.running_mean"])
