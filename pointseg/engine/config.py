"""Experiment configs: OmegaConf YAML with ``_base_`` inheritance and ``key=value`` overrides.

A config file may name the files it extends in ``_base_`` (a path or a list of paths, relative to
the file); bases are merged in order, then the file itself, then the command-line overrides.
Overrides must name an existing key (a typo like ``train.iteration=5`` would otherwise be
silently ignored by the trainer); prefix a key with ``+`` to add a new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from pointseg.utils.io import atomic_write_text

BASE_KEY = "_base_"

# Keys every config must define (after inheritance and overrides); the trainer, the test tool and
# the analysis tools read them without defaults.
REQUIRED_KEYS: tuple[str, ...] = (
    "seed",
    "data.root",
    "data.batch_size",
    "model.name",
    "model.backend",
    "model.in_channels",
    "model.num_classes",
    "optim.name",
    "optim.lr",
    "sched.name",
    "train.iterations",
)

_MISSING = object()


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # OmegaConf wraps yaml errors in several types
        raise ValueError(f"{path}: cannot parse YAML ({e})") from e
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    return cfg


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> DictConfig:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ValueError(f"{path}: circular {BASE_KEY} inheritance ({cycle})")
    cfg = _read_yaml(path)
    bases = cfg.pop(BASE_KEY, None)
    if bases is None:
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, ListConfig)) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: {BASE_KEY} must be a path or a list of paths")
    merged = OmegaConf.create({})
    for base in bases:
        merged = OmegaConf.merge(merged, _load_with_bases(path.parent / base, (*chain, path)))
    return OmegaConf.merge(merged, cfg)


def apply_overrides(cfg: DictConfig, overrides: Iterable[str], source: str = "command line") -> DictConfig:
    """Apply ``key=value`` overrides in place (values parsed as YAML: ``1e-3``, ``[1,2]``, ``null``).

    ``key`` may address list items (``loss.0.weight=2``); ``+key=value`` adds a key that the
    config does not have yet.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{source}: override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        add = key.startswith("+")
        key = key.lstrip("+")
        if not key:
            raise ValueError(f"{source}: override {item!r} has an empty key")
        try:
            # OmegaConf's YAML reading (1e-3 is a float, unlike plain YAML 1.1).
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"] if text.strip() else ""
        except Exception as e:  # yaml and OmegaConf grammar errors
            raise ValueError(f"{source}: override {item!r}: cannot parse value ({e})") from e
        if not add and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise KeyError(
                f"{source}: override {item!r}: the config has no key {key!r} "
                f"(write +{key}=... to add a new key)"
            )
        OmegaConf.update(cfg, key, value, merge=False, force_add=add)
    return cfg


def validate_config(cfg: DictConfig, source: str = "config") -> None:
    """Raise ``ValueError`` naming ``source`` and the key when a required key is absent or bad."""
    for key in REQUIRED_KEYS:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING or value is None or OmegaConf.is_missing(cfg, key):
            raise ValueError(f"{source}: missing required key {key!r}")
    iterations = cfg.train.iterations
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations <= 0:
        raise ValueError(f"{source}: train.iterations must be a positive integer, got {iterations!r}")
    batch = cfg.data.batch_size
    if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
        raise ValueError(f"{source}: data.batch_size must be a positive integer, got {batch!r}")
    if "loss" in cfg and cfg.loss is not None and not isinstance(cfg.loss, ListConfig):
        raise ValueError(f"{source}: loss must be a list of {{name, weight, ...}} entries")


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> DictConfig:
    """Load ``path`` with its ``_base_`` chain, apply ``overrides`` and check the required keys."""
    path = Path(path)
    cfg = _load_with_bases(path, ())
    apply_overrides(cfg, overrides)
    validate_config(cfg, str(path))
    return cfg


def config_from_dict(data: dict[str, Any], overrides: Iterable[str] = (), source: str = "checkpoint") -> DictConfig:
    """Rebuild a config stored as a plain dict (e.g. in a checkpoint) and apply overrides."""
    cfg = OmegaConf.create(data)
    apply_overrides(cfg, overrides, source)
    validate_config(cfg, source)
    return cfg


def to_plain_dict(cfg: Any) -> dict[str, Any]:
    """Resolved plain-python copy (dicts, lists, scalars): safe for ``torch.load(weights_only=True)``."""
    if not OmegaConf.is_config(cfg):
        return dict(cfg)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def default_run_dir(config_path: str | os.PathLike, root: str | os.PathLike = "runs") -> Path:
    """``runs/<config folder>/<config name>``, e.g. ``runs/synthetic/ceco`` for ``configs/synthetic/ceco.yaml``."""
    p = Path(config_path)
    return Path(root) / p.parent.name / p.stem
