"""Checkpoints: atomic save, ``weights_only`` load, RNG capture, inference loading and export.

Everything in a checkpoint is a tensor or plain python (dict, list, str, number, bool, None), so
``torch.load(weights_only=True)`` reads it and no checkpoint can execute code when loaded.
Checkpoints of earlier layouts (0.1.0, format 2) are upgraded when loaded
(``pointseg.engine.legacy``); inference drops every auxiliary loss by one rule, the state-dict
prefix ``aux_losses.`` (``strip_aux_losses``).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np
import torch

from pointseg.engine.config import config_from_dict, to_plain_dict
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


# How many tensor names a mismatch error shows of each kind; --debug shows them all.
SHOWN_NAMES = 3
# Config keys that decide a model's tensors, compared to name the likely cause of a mismatch.
MODEL_KEYS = ("model.name", "model.num_classes", "model.in_channels", "ceco.enabled", "ceco.projection")


def _config_value(cfg: Mapping[str, Any] | None, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def mismatch_cause(stored: Mapping[str, Any] | None, configured: Mapping[str, Any] | None) -> str | None:
    """The likely cause of weights that do not fit, in words, from the checkpoint's stored config
    and the one the model was built from: "the checkpoint holds a MinkUNet34C, the config asks
    for MinkUNet18A", or the first other setting of :data:`MODEL_KEYS` that differs."""
    for key in MODEL_KEYS:
        old, new = _config_value(stored, key), _config_value(configured, key)
        if old is None or new is None or old == new:
            continue
        if key == "model.name":
            return f"the checkpoint holds a {old}, the config asks for {new}"
        return f"{key} is {old} in the checkpoint, {new} in the config"
    return None


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_NAMES])
    return shown + (", ..." if len(keys) > SHOWN_NAMES else "")


def describe_mismatch(
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    stored: Mapping[str, Any] | None = None,
    configured: Mapping[str, Any] | None = None,
) -> str:
    """A state-dict mismatch in a few hundred characters: the likely cause, then how many
    tensors the model misses, how many the checkpoint has that the model lacks and how many
    differ in shape, each with the first names (torch's message lists them all: tens of
    thousands of characters for a whole other backbone)."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    shaped = [k for k in model_state if k in state and tuple(model_state[k].shape) != tuple(state[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors of the model are not in the checkpoint ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} of the checkpoint are not in the model ({_names(unexpected)})")
    if shaped:
        k = shaped[0]
        shapes = f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(model_state[k].shape)} in the model"
        parts.append(f"{len(shaped)} differ in shape ({shapes}{', ...' if len(shaped) > 1 else ''})")
    cause = mismatch_cause(stored, configured)
    facts = "; ".join(parts) or "the tensors do not load"
    return f"{cause}: {facts}" if cause else facts


def load_model_weights(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    stored: Mapping[str, Any] | None = None,
    configured: Mapping[str, Any] | None = None,
) -> None:
    """``model.load_state_dict(state, strict=True)``; weights that do not fit are a short
    ValueError naming ``path`` and the likely cause (:func:`describe_mismatch`, from the
    checkpoint's ``stored`` config and the ``configured`` one), with torch's full list as its
    cause (what ``--debug`` shows)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        problem = describe_mismatch(model.state_dict(), state, stored, configured)
        raise ValueError(f"{path}: the weights do not fit the configured model: {problem} (--debug lists every tensor)") from e


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


def fixed_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's fixed simplex ETFs (every ``etf`` buffer: the center branch's, the fixed point
    classifier's), by state-dict key: the config builds them, so a checkpoint must hold the same."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] == "etf"}


def load_for_inference(
    path: str | os.PathLike, overrides: Iterable[str] = (), device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any]:
    """Evaluation Segmentor (no auxiliary losses) and its config from a training or exported checkpoint.

    ``overrides`` change the stored config, e.g. ``("model.backend=torch",)`` to run a model
    trained with spconv on a machine without it (weights are backend-neutral).
    """
    return model_from_checkpoint(load_checkpoint(path), path, overrides, device)


def model_from_checkpoint(
    ckpt: dict, path: str | os.PathLike, overrides: Iterable[str] = (), device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any]:
    """:func:`load_for_inference` from a checkpoint already loaded from ``path`` (named in errors),
    for callers that also need its other entries."""
    from pointseg.models.segmentor import build_segmentor, strip_aux_losses

    cfg = config_from_dict(ckpt["config"], overrides, source=f"{path}: config")
    model = build_segmentor(cfg, train=False)
    load_model_weights(model, strip_aux_losses(ckpt["model"]), path, ckpt["config"], to_plain_dict(cfg))
    return model.to(device).eval(), cfg


def export_inference_weights(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write only what evaluation needs: the model without its auxiliary losses, plus the config."""
    from pointseg.models.segmentor import strip_aux_losses

    ckpt = load_checkpoint(ckpt_path)
    out = {
        "format": CHECKPOINT_FORMAT,
        "model": strip_aux_losses(ckpt["model"]),
        "config": ckpt["config"],
        "iteration": ckpt.get("iteration"),
        "best_miou": ckpt.get("best_miou"),
    }
    save_checkpoint(out, out_path)
    return Path(out_path)
