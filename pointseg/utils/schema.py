"""Declaring config sections: a dataclass field with its default, a one-line doc and a check.

Each module that reads a config section declares it once as a dataclass of ``param`` fields
(``pointseg.data.dataset.DataConfig``, ``pointseg.engine.trainer_config.TrainConfig``, ...), and
``pointseg.engine.config`` assembles them into the experiment schema. OmegaConf checks the types
and rejects unknown keys; the ``check`` of each field validates its value once, at load, so no
module has to re-check or replace what the user wrote.

The loader marks what it checked (:func:`mark_checked`): a read-only config, so its values stay
as they were checked. :func:`typed` returns a checked section as it is and :func:`validate_section`
does not check it again; a partial section a caller assembled by hand (tests, tools) is typed and
checked once, where it is used.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None
REQUIRED = "???"  # OmegaConf's mark of a value the config must set


def param(default: Any, doc: str = "", check: Check | None = None, **kw: Any) -> Any:
    """A dataclass field with a one-line ``doc`` and an optional value ``check``.

    A list, dict or section default is given as is and copied per instance; ``REQUIRED`` makes
    the key one that every config must set.
    """
    meta = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


# The configs the loader checked, by identity (a DictConfig hashes and compares by content), held
# weakly: an entry goes when its config is freed.
_CHECKED: dict[int, "weakref.ref[Any]"] = {}


def mark_checked(cfg: Any) -> Any:
    """Freeze ``cfg`` (a checked, typed DictConfig) and remember that it was checked: builders then
    take its sections as they are. Returns ``cfg``."""
    from omegaconf import OmegaConf

    OmegaConf.set_readonly(cfg, True)
    key = id(cfg)
    _CHECKED[key] = weakref.ref(cfg, lambda _ref: _CHECKED.pop(key, None))
    return cfg


def is_checked(value: Any, schema: type | None = None) -> bool:
    """Whether ``value`` is (a section of) a config :func:`mark_checked` froze, still read-only and,
    with ``schema``, typed by it. A copy or a merge of one is not: it is checked again."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(value) or not OmegaConf.is_readonly(value):
        return False
    node = value
    parent = node._get_parent()
    while parent is not None:  # a copy of a section keeps its parent link, but not its place
        if parent._get_node(node._key()) is not node:
            return False
        node, parent = parent, parent._get_parent()
    ref = _CHECKED.get(id(node))
    if ref is None or ref() is not node:
        return False
    return schema is None or OmegaConf.get_type(value) is schema


def replace_checked(cfg: Any, where: str, **changes: Any) -> Any:
    """A checked section with ``changes`` applied: a new frozen, checked copy in which only the
    changed values are checked (the others were, at load). E.g. the trainer's ``data`` section with
    the run's seed where ``data.seed`` is null."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.get_type(cfg)
    known = fields_of(schema)
    for key in changes:
        if key not in known:
            raise ValueError(unknown_key_message(where, key, sorted(known)))
    try:
        out = OmegaConf.merge(cfg, changes)
    except OmegaConfBaseException as e:
        raise ValueError(f"{where}: {type_error_message(e)}") from None
    out._set_parent(None)  # a section of its own (the copy kept its parent link)
    for key in changes:
        _check_value(known[key], OmegaConf.select(out, key), where, f"{where}.{key}")
    return mark_checked(out)


def plain(value: Any) -> Any:
    """OmegaConf containers as plain python (dicts, lists, scalars), resolved; anything else as it is."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def typed(schema: type, value: Any = None, where: str = "config") -> Any:
    """``value`` (a partial section: dict, DictConfig or None) merged onto the schema's defaults:
    a typed, struct-mode DictConfig. Unknown keys and values of the wrong type raise ValueError
    naming ``where``, the key and the closest known key. A section of a checked config
    (:func:`is_checked`) is returned as it is."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if is_checked(value, schema):
        return value
    base = OmegaConf.structured(schema)
    if value is None:
        return base
    plain = OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
    for key, known in unknown_keys(schema, plain):
        raise ValueError(unknown_key_message(where, key, known))
    try:
        return OmegaConf.merge(base, value)
    except OmegaConfBaseException as e:
        raise ValueError(f"{where}: {type_error_message(e)}") from None


def unknown_key_message(where: str, key: str, known: Sequence[str]) -> str:
    near = closest(key, known)
    hint = f"; did you mean {near!r}?" if near else f"; known here: {', '.join(known)}"
    return f"{where}: unknown key {key!r}{hint}"


def type_error_message(e: Exception) -> str:
    """OmegaConf's validation error as one line: the key and what is wrong."""
    key = getattr(e, "full_key", None) or getattr(e, "key", None)
    msg = str(e).splitlines()[0]
    return f"{key}: {msg}" if key else msg


# ------------------------------------------------------------------------------ checks
def positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v is None or v >= 0 else "must be >= 0"


def at_least(low: float) -> Check:
    return lambda v: None if v is None or v >= low else f"must be >= {low}"


def in_range(low: float, high: float) -> Check:
    """low <= v < high."""
    return lambda v: None if v is None or low <= v < high else f"must be in [{low}, {high})"


def one_of(*choices: Any) -> Check:
    return lambda v: None if v is None or v in choices else f"must be one of {list(choices)}"


# ------------------------------------------------------------------------------ walking a schema
def fields_of(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def section_type(f: dataclasses.Field) -> type | None:
    """The dataclass type of a nested section field, else None."""
    t = f.type
    if isinstance(t, str):  # postponed annotations: resolve through the default factory
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            return type(value) if dataclasses.is_dataclass(value) else None
        return None
    return t if dataclasses.is_dataclass(t) else None


def unknown_keys(schema: type, data: Any, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """(dotted key, known keys at that level) for every key of ``data`` the schema lacks."""
    if not isinstance(data, dict):
        return
    known = fields_of(schema)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in known:
            yield full, sorted(known)
            continue
        sub = section_type(known[key])
        if sub is not None:
            yield from unknown_keys(sub, value, f"{full}.")


def closest(key: str, candidates: Sequence[str]) -> str | None:
    leaf = key.rsplit(".", 1)[-1]
    match = difflib.get_close_matches(leaf, list(candidates), n=1, cutoff=0.6)
    if not match:
        return None
    return f"{key.rsplit('.', 1)[0]}.{match[0]}" if "." in key else match[0]


def leaves(schema: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every value of the schema, sections expanded."""
    for name, f in fields_of(schema).items():
        sub = section_type(f)
        if sub is not None:
            yield from leaves(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", f


def flatten(data: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of the leaves of a plain nested dict (lists are leaves)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict) and value:
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"


def section(schema: type, value: Any, where: str) -> Any:
    """A typed, checked section from a checked config's (as it is) or a partial one (typed and
    checked here, once)."""
    cfg = typed(schema, value, where)
    validate_section(schema, cfg, where)
    return cfg


def validate_section(schema: type, cfg: Any, where: str, source: Callable[[str], str] | None = None) -> None:
    """Run every field's ``check`` on ``cfg`` (a typed section, nested sections included), unless
    the loader checked it already (:func:`is_checked`).

    ``source(key)`` names where a key's value came from (a file, the command line); without it
    errors name ``where``.
    """
    if source is None and is_checked(cfg, schema):
        return
    _run_checks(schema, cfg, where, source)


def validate_config(schema: type, cfg: Any, source: Callable[[str], str]) -> None:
    """Check a whole composed config once, section by section (``source(key)`` names where each
    value came from)."""
    top = [(name, f) for name, f in fields_of(schema).items() if section_type(f) is None]
    _run_checks(schema, cfg, "config", source, fields=top)
    for name, f in fields_of(schema).items():
        sub = section_type(f)
        if sub is not None:
            _run_checks(sub, cfg[name], name, source, prefix=f"{name}.")


def _run_checks(
    schema: type,
    cfg: Any,
    where: str,
    source: Callable[[str], str] | None,
    prefix: str = "",
    fields: Sequence[tuple[str, dataclasses.Field]] | None = None,
) -> None:
    """The checks of ``fields`` (default: every leaf of ``schema``) on ``cfg``, a section whose
    keys are ``prefix`` + its own in ``source``'s and the messages' terms."""
    from omegaconf import OmegaConf

    for key, f in (leaves(schema) if fields is None else fields):
        if f.metadata.get("check") is None or OmegaConf.is_missing(cfg, key):
            continue
        origin = source(prefix + key) if source else where
        _check_value(f, OmegaConf.select(cfg, key), origin, prefix + key if source else f"{where}.{key}")


def _check_value(f: dataclasses.Field, value: Any, origin: str, key: str) -> None:
    """Run a field's ``check`` on one value; the error names ``origin`` and the dotted ``key``."""
    from omegaconf import OmegaConf

    check = f.metadata.get("check")
    if check is None:
        return
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    problem = check(value)
    if problem:
        raise ValueError(f"{origin}: {key} {problem} (got {value!r})")


def check_registry_list(items: Any, registry: Mapping[str, Callable[..., Any]], reserved: Sequence[str] = ()) -> str | None:
    """What is wrong with a ``[{name, **kwargs}, ...]`` list of a registry (transforms, losses):
    each entry names a known class and its keys are arguments of that class (``reserved`` keys,
    such as a loss's ``weight``, belong to the caller). None when it is fine."""
    if not isinstance(items, (list, tuple)):
        return f"must be a list of {{name, ...}}, got {type(items).__name__}"
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "name" not in item:
            return f"[{i}] must be a mapping with a 'name', got {item!r}"
        name = item["name"]
        if name not in registry:
            near = difflib.get_close_matches(str(name), list(registry), n=1)
            return f"[{i}]: unknown name {name!r}" + (f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(registry)}")
        kwargs = {k: v for k, v in item.items() if k != "name" and k not in reserved}
        try:
            inspect.signature(registry[name]).bind(**kwargs)
        except TypeError as e:
            params = [p for p in inspect.signature(registry[name]).parameters if p != "self"]
            return f"[{i}] ({name}): {e}; it takes {params}"
    return None
