"""Training engine: configs, optimizers and schedules, checkpoints, logging, distributed, Trainer.

``Trainer`` is imported from ``pointseg.engine.trainer`` (it pulls in the data and model packages).
"""

from pointseg.engine.checkpoint import export_inference_weights, load_checkpoint, load_for_inference, save_checkpoint
from pointseg.engine.config import apply_override, default_run_dir, load_config
from pointseg.engine.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "apply_override",
    "build_optimizer",
    "build_scheduler",
    "default_run_dir",
    "export_inference_weights",
    "load_checkpoint",
    "load_config",
    "load_for_inference",
    "save_checkpoint",
]
