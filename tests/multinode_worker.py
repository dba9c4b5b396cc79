"""One process of a torchrun job in the multi-node test: trains the tiny config, then saves its
own replica's weights (the trainer writes only on rank 0) as OUT/rank<RANK>.pt.

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... tests/multinode_worker.py CONFIG RUN OUT
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from engine_helpers import register_tiny_backbone  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pointseg.engine.distributed import cleanup  # noqa: E402
from pointseg.engine.trainer import Trainer  # noqa: E402

if __name__ == "__main__":
    config, run, out = sys.argv[1:4]
    register_tiny_backbone()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(OmegaConf.load(config), run, device="cpu")
        summary = trainer.train()
        info = {"rank": trainer.dist.rank, "world_size": trainer.dist.world_size,
                "group_rank": int(os.environ["GROUP_RANK"]), "local_rank": trainer.dist.local_rank}
        torch.save({"state": trainer.model.state_dict(), "summary": summary, "info": info},
                   Path(out) / f"rank{trainer.dist.rank}.pt")
    finally:
        cleanup()
