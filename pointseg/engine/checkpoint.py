"""Checkpoints: atomic save, ``weights_only`` load, RNG capture, inference loading and export.

Everything in a checkpoint is a tensor or plain python (dict, list, str, number, bool, None), so
``torch.load(weights_only=True)`` reads it and no checkpoint can execute code when loaded.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np
import torch

from pointseg.engine.config import config_from_dict
from pointseg.engine.legacy import CHECKPOINT_FORMAT, upgrade_checkpoint
from pointseg.utils.io import atomic_path


class _WriteRecorder:
    """The file ``torch.save`` writes to, remembering the ``OSError`` of a failed write.

    torch reports a failed write (a full disk) as ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos ...``; the recorded ``OSError`` says what happened.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, synced to the disk, + rename
    (:func:`pointseg.utils.io.atomic_path`): a crash, a power cut or a full disk never leaves a
    half-written file, and the previous file at ``path`` stays as it was.

    A failed write raises its ``OSError`` with ``path`` as the file name (on a full disk: errno
    ``ENOSPC``, "No space left on device").
    """
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            writer = _WriteRecorder(f)
            try:
                torch.save(ckpt, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
    except OSError as e:  # from a write, or from the final flush when the file closes
        raise OSError(e.errno, e.strerror, str(path)) from e


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``, with errors that name the file; 0.1.0 checkpoints are
    upgraded to today's layout (``pointseg.engine.legacy``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"{path}: cannot load checkpoint ({_load_problem(e)})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a pointseg checkpoint (needs 'model' and 'config')")
    return upgrade_checkpoint(ckpt, str(path))


def _load_problem(e: Exception) -> str:
    """The part of a ``torch.load`` error a user can act on: its weights-only refusal says at
    length why it refuses before saying what it found (an unknown global, a broken stream)."""
    text = " ".join(str(e).split())
    text = text.split("WeightsUnpickler error: ", 1)[-1]
    text = re.sub(r"^Weights only load failed\..*?trusted source\. ", "", text)
    text = re.sub(r" ?Check the documentation of torch\.load.*$", "", text)
    return f"{type(e).__name__}: {text}"


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy-global and python RNG states as tensors / plain python."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def find_etf(model: torch.nn.Module) -> torch.Tensor | None:
    """The fixed simplex-ETF classifier of the center branch (``Segmentor.etf``), if it has one.

    None without CeCo or with a learned center classifier (paper Table 1).
    """
    etf = getattr(model, "etf", None)
    return etf.detach().cpu().clone() if isinstance(etf, torch.Tensor) else None


def load_for_inference(
    path: str | os.PathLike, overrides: Iterable[str] = (), device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any]:
    """Evaluation Segmentor (no center branch) and its config from a training or exported checkpoint.

    ``overrides`` change the stored config, e.g. ``("model.backend=torch",)`` to run a model
    trained with spconv on a machine without it (weights are backend-neutral).
    """
    return model_from_checkpoint(load_checkpoint(path), path, overrides, device)


def model_from_checkpoint(
    ckpt: dict, path: str | os.PathLike, overrides: Iterable[str] = (), device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any]:
    """:func:`load_for_inference` from a checkpoint already loaded from ``path`` (named in errors),
    for callers that also need its other entries."""
    from pointseg.models.segmentor import build_segmentor, strip_center_branch

    cfg = config_from_dict(ckpt["config"], overrides, source=f"{path}: config")
    model = build_segmentor(cfg, train=False)
    state = strip_center_branch(ckpt["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the model the config describes ({e})") from e
    return model.to(device).eval(), cfg


def export_inference_weights(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write only what evaluation needs: the model without its center branch, plus the config."""
    from pointseg.models.segmentor import strip_center_branch

    ckpt = load_checkpoint(ckpt_path)
    out = {
        "format": CHECKPOINT_FORMAT,
        "model": strip_center_branch(ckpt["model"]),
        "config": ckpt["config"],
        "iteration": ckpt.get("iteration"),
        "best_miou": ckpt.get("best_miou"),
    }
    save_checkpoint(out, out_path)
    return Path(out_path)
