"""Experiment configs: a typed schema, YAML files with ``_base_`` inheritance, ``key=value`` overrides.

The schema (:class:`ExperimentConfig`) is assembled from the sections their modules declare
(``DataConfig`` in ``pointseg.data.dataset``, ``ModelConfig`` in ``pointseg.models.segmentor``,
``CecoConfig`` in ``pointseg.losses.ceco``, ``OptimConfig`` / ``SchedConfig`` in
``pointseg.engine.optim``, ``TrainConfig`` in ``pointseg.engine.trainer_config``): every key once, with its
default, a one-line doc and a check. A config file may name the files it extends in ``_base_`` (a
path or a list of paths, relative to the file); the schema's defaults come first, then the bases
in order, then the file itself, then the command-line overrides. Each layer is checked when it is
applied: an unknown key or a value of the wrong type is an error that names the file (or the
command line), the key and the closest known key; then every value is checked once, and
``model.in_channels`` is derived from ``data.features``. ``explain_config`` also says which layer
set each value (``tools/train.py --print-config``).

That is the one pass: the composed config is frozen (read-only) and marked checked
(``pointseg.utils.schema.mark_checked``), so the builders take its typed sections as they are and
nothing downstream types or checks them again. Code that assembles a config by hand gets a
mutable copy with :func:`editable`; whoever receives it then checks it once.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pointseg.data.dataset import DataConfig
from pointseg.datasets import spec_of
from pointseg.engine.optim import OptimConfig, SchedConfig
from pointseg.engine.trainer_config import TrainConfig
from pointseg.losses import DEFAULT_LOSS, check_losses
from pointseg.losses.ceco import CecoConfig
from pointseg.models.segmentor import ModelConfig, resolve_in_channels
from pointseg.utils.io import atomic_write_text
from pointseg.utils.schema import (
    flatten,
    is_checked,
    leaves,
    mark_checked,
    param,
    plain,
    type_error_message,
    unknown_key_message,
    unknown_keys,
    validate_config,
)

BASE_KEY = "_base_"
DEFAULT = "default"
OVERRIDE = "command line"
_ABSENT = object()


@dataclass
class ExperimentConfig:
    """Everything one training run, evaluation or analysis reads."""

    seed: int = param(0, "[ours] seeds the weights, the data order and the augmentations")
    data: DataConfig = param(DataConfig(), "")
    model: ModelConfig = param(ModelConfig(), "")
    ceco: CecoConfig = param(CecoConfig(), "")
    loss: list = param(DEFAULT_LOSS, "[LG] point losses [{name, weight, ...}]: cross_entropy, lovasz, dice, focal; long-tail: logit_adjusted (Menon et al. ICLR 2021), balanced_softmax (Ren et al. NeurIPS 2020), class weights from stats.json (Cui et al. CVPR 2019), cross_entropy balanced_sampling ([LG] per-category balanced point sampling); see Losses below", check_losses)
    optim: OptimConfig = param(OptimConfig(), "")
    sched: SchedConfig = param(SchedConfig(), "")
    train: TrainConfig = param(TrainConfig(), "")


# ------------------------------------------------------------------------------ files
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


def file_layers(path: str | os.PathLike, chain: tuple[Path, ...] = ()) -> list[tuple[str, DictConfig]]:
    """(source, content) of ``path`` and its ``_base_`` files, in merge order (bases first).

    The source of a base file is ``"<path> (base)"``.
    """
    path = Path(path).resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ValueError(f"{path}: circular {BASE_KEY} inheritance ({cycle})")
    cfg = _read_yaml(path)
    bases = cfg.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, ListConfig)) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: {BASE_KEY} must be a path or a list of paths")
    layers = []
    for base in bases:
        layers += [(s if s.endswith("(base)") else f"{s} (base)", c) for s, c in file_layers(path.parent / base, (*chain, path))]
    return layers + [(_display(path), cfg)]


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ composing
def _apply_layer(cfg: DictConfig, source: str, layer: Any, sources: dict[str, str]) -> DictConfig:
    plain = OmegaConf.to_container(layer, resolve=False) if OmegaConf.is_config(layer) else layer
    for key, known in unknown_keys(ExperimentConfig, plain):
        raise ValueError(unknown_key_message(source, key, known))
    try:
        cfg = OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as e:
        raise ValueError(f"{source}: {type_error_message(e)}") from None
    for key in flatten(plain):
        sources[key] = source
    return cfg


def apply_override(cfg: DictConfig, item: str, sources: dict[str, str] | None = None) -> None:
    """Apply one ``key=value`` (the value read as YAML: ``1e-3``, ``[1,2]``, ``null``) in place.

    ``key`` must exist in the schema (``loss.0.weight`` addresses a list item).
    """
    if "=" not in item:
        raise ValueError(f"{OVERRIDE}: override {item!r} is not of the form key=value")
    key, text = (part.strip() for part in item.split("=", 1))
    if not key:
        raise ValueError(f"{OVERRIDE}: override {item!r} has an empty key")
    if not _has_key(cfg, key):
        near = _closest_full(key)
        hint = f"; did you mean {near!r}?" if near else ""
        raise ValueError(f"{OVERRIDE}: override {item!r}: no key {key!r} in the config{hint}")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"] if text else ""
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ValueError(f"{OVERRIDE}: override {item!r}: {type_error_message(e)}") from None
    except Exception as e:  # YAML grammar errors
        raise ValueError(f"{OVERRIDE}: override {item!r}: cannot parse the value ({e})") from None
    if sources is not None:
        for k in list(sources):
            if k == key or k.startswith(f"{key}."):
                del sources[k]
        sources[key] = OVERRIDE


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` exists in ``cfg``, a required value not yet set (``???``) included:
    ``OmegaConf.select`` answers its default for one."""
    if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
        return True
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=_ABSENT, throw_on_missing=False) if parent_key else cfg
    return isinstance(parent, DictConfig) and OmegaConf.is_missing(parent, leaf)


def _closest_full(key: str) -> str | None:
    full = [k for k, _ in leaves(ExperimentConfig)]
    match = difflib.get_close_matches(key, full, n=1, cutoff=0.6)
    return match[0] if match else None


def compose(layers: Iterable[tuple[str, Any]], overrides: Iterable[str] = ()) -> tuple[DictConfig, dict[str, str]]:
    """The checked config of the schema's defaults, the ``(source, content)`` layers and the
    overrides, and the source of every value (``default`` for the schema's).

    A required key left unset is an error naming the last layer (the config file itself), where
    it belongs, or the command line where no layer was given."""
    cfg = OmegaConf.structured(ExperimentConfig)
    sources: dict[str, str] = {}
    last_layer = OVERRIDE
    for source, layer in layers:
        cfg = _apply_layer(cfg, source, layer, sources)
        last_layer = source
    for item in overrides:
        apply_override(cfg, item, sources)

    def source_of(key: str) -> str:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):  # a list item's source is its list's
            if ".".join(parts[:n]) in sources:
                return sources[".".join(parts[:n])]
        return DEFAULT

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        where = "in the config or on the command line" if last_layer != OVERRIDE else "on the command line"
        raise ValueError(f"{last_layer}: missing required key {key!r}; set it {where} ({key}=...)")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ValueError(f"config: {type_error_message(e)}") from None
    validate_config(ExperimentConfig, cfg, source_of)
    derived = resolve_in_channels(cfg.model.in_channels, list(cfg.data.features), source_of("model.in_channels"))
    if cfg.model.in_channels is None:
        cfg.model.in_channels = derived
        sources["model.in_channels"] = "derived from data.features"
    # A value set by hand is checked where scenes are loaded (build_dataset), not here: a
    # checkpoint's config must load for prediction whatever data it was trained on.
    if cfg.model.num_classes is None:
        cfg.model.num_classes = spec_of(cfg.data).num_classes
        sources["model.num_classes"] = "derived from " + ("data.classes" if cfg.data.classes is not None else "data.dataset")
    return mark_checked(cfg), {k: source_of(k) for k, _ in leaves(ExperimentConfig)}


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> DictConfig:
    """Load ``path`` with its ``_base_`` chain and ``overrides``, typed, checked and frozen."""
    return compose(file_layers(path), overrides)[0]


def explain_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> tuple[DictConfig, dict[str, str]]:
    """:func:`load_config` and where each value came from (default, a base file, the file, the command line)."""
    return compose(file_layers(path), overrides)


def config_from_dict(data: dict[str, Any], overrides: Iterable[str] = (), source: str = "checkpoint") -> DictConfig:
    """Rebuild a config stored as a plain dict (e.g. in a checkpoint) and apply overrides."""
    return compose([(source, data)], overrides)[0]


def complete_config(cfg: Any, source: str = "config") -> DictConfig:
    """A typed, checked config from a complete or partial one (a DictConfig or a plain dict); a
    config the loader checked is returned as it is."""
    if is_checked(cfg, ExperimentConfig):
        return cfg
    data = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
    return config_from_dict(data, (), source)


def editable(cfg: DictConfig) -> DictConfig:
    """A mutable copy of a loaded (frozen) config, for code that assembles configs (tests, tools):
    it is no longer marked checked, so the trainer or builder that receives it checks it once."""
    out = copy.deepcopy(cfg)
    OmegaConf.set_readonly(out, False)
    return out


def format_explained(cfg: DictConfig, sources: dict[str, str]) -> str:
    """One line per value, ``key: value  # source``, sections in schema order."""
    rows = []
    for key, _ in leaves(ExperimentConfig):
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        rows.append((key, repr(value) if isinstance(value, str) else _compact(value), sources.get(key, DEFAULT)))
    width = max(len(f"{k}: {v}") for k, v, _ in rows)
    return "\n".join(f"{f'{k}: {v}':<{width}}  # {s}" for k, v, s in rows)


def _compact(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def schema_markdown() -> str:
    """The reference table of every key: default and doc (``docs/config.md``)."""
    lines = [
        "| key | default | what, and where the default comes from |",
        "| --- | --- | --- |",
    ]
    base = OmegaConf.structured(ExperimentConfig)
    for key, f in leaves(ExperimentConfig):
        section, _, leaf = key.rpartition(".")
        if OmegaConf.is_missing(OmegaConf.select(base, section) if section else base, leaf):
            shown = "required"
        else:
            value = OmegaConf.select(base, key)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            shown = f"`{_compact(value)}`"
        doc = f.metadata.get("doc", "").replace("|", "\\|")
        lines.append(f"| `{key}` | {shown} | {doc} |")
    return "\n".join(lines) + "\n"


def to_plain_dict(cfg: Any) -> dict[str, Any]:
    """Resolved plain-python copy (dicts, lists, scalars): safe for ``torch.load(weights_only=True)``."""
    return dict(plain(cfg))


def save_config(cfg: DictConfig, path: str | os.PathLike, header: Sequence[str] = ()) -> None:
    """Write the resolved config as YAML, atomically; ``header`` lines go first, as comments
    (facts of the run that are not settings, such as the backend ``auto`` chose)."""
    comments = "".join(f"# {line}\n" for line in header)
    atomic_write_text(path, comments + OmegaConf.to_yaml(cfg, resolve=True))


def default_run_dir(config_path: str | os.PathLike, root: str | os.PathLike = "runs") -> Path:
    """``runs/<config folder>/<config name>``, e.g. ``runs/synthetic/ceco`` for ``configs/synthetic/ceco.yaml``."""
    p = Path(config_path)
    return Path(root) / p.parent.name / p.stem
