"""Config helpers: dataclasses <- dicts / YAML files / `--set key=value` overrides, strictly.

Unknown keys are errors that list the valid ones; values are parsed with YAML rules
(`--set lr=3e-4`, `--set moe_layers=[0,4,7]`, `--set ema=true`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .configs import find_config

T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    """A named starting point of one model family: model config, training recipe, data options.

    Every family keeps a `PRESETS: dict[str, Preset]` next to its config class; `--preset NAME`
    picks one, then a YAML file and `--set` overrides apply on top (`resolve_sections`).
    """

    model: Any
    train: Any  # trajmoe.train.TrainConfig
    data: Any = None


def pick_preset(presets: dict[str, Preset], name: str, family: str) -> Preset:
    """presets[name]; an unknown name is a one-line ValueError listing the valid ones."""
    if name not in presets:
        raise ValueError(f"unknown {family} preset {name!r}; valid presets: {', '.join(presets)}")
    return presets[name]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` / `5E+2` as floats (YAML 1.2 rule; PyYAML follows YAML 1.1,
    which needs a dot, so `lr=1e-3` would otherwise arrive as the string '1e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text safely, reading `1e-3` as a float (YAML 1.2 rule); yaml.YAMLError on bad syntax."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """['a=1', 'b.c=[1,2]'] -> {'a': 1, 'b.c': [1, 2]} (values parsed as YAML); a dict is taken as parsed."""
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path` (a `configs/...` path may name a spec shipped in the package:
    `trajmoe.configs.find_config`); missing file, bad YAML or a non-mapping is a one-line error."""
    path = find_config(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing config file: {path}")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"corrupt YAML in {path}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def checker(obj: object, section: str) -> Callable[[bool, str, str], None]:
    """The validator every config's `__post_init__` uses: `need(ok, key, rule)` raises the one-line
    `ValueError("{section}.{key} must be {rule}, got {value!r}")` unless `ok`."""

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"{section}.{key} must be {rule}, got {getattr(obj, key)!r}")

    return need


def is_int(v: object) -> bool:
    """An int that is not a bool (YAML `true` is not a count)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_keys(cls: type, data: dict[str, Any], where: str = "config") -> None:
    """Check that every key of `data` is a field of dataclass `cls`.

    Raises:
        ValueError: one line naming `where`, the unknown keys and the valid ones.
    """
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ValueError(f"unknown {where} key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a flat dict; nested dataclass fields accept dicts.

    Lists are turned into tuples where the field's type is a tuple, so frozen configs hash.
    """
    check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        hint = hints.get(k)
        sub = _dataclass_in(hint)
        if sub is not None and isinstance(v, dict):
            v = from_dict(sub, v, f"{where}.{k}")
        elif isinstance(v, list) and _is_tuple(hint):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        _check_type(v, hint, f"{where}.{k}")
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:  # a value of the wrong kind reached __post_init__'s comparisons
        raise ValueError(f"{where}: a value has the wrong type ({e})") from None


def _check_type(v: Any, hint: Any, key: str) -> None:
    """Scalar fields must get scalars of their kind (`--set dim=abc` is an error, not a crash)."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
    if v is None and type(None) in allowed:
        return
    def ok(t: Any) -> bool:
        if t is bool:
            return isinstance(v, bool)
        if t is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if t is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if t is str:
            return isinstance(v, str)
        if typing.get_origin(t) is tuple or t is tuple:
            return isinstance(v, (tuple, list))
        return True  # other kinds (dicts, dataclasses, Any) are checked by the config itself
    if not any(ok(t) for t in allowed):
        names = " | ".join(getattr(t, "__name__", str(t)) for t in allowed)
        raise ValueError(f"{key} must be {names}, got {v!r}")


def replace(cfg: T, overrides: dict[str, Any], where: str = "config") -> T:
    """dataclasses.replace with dotted keys (`moe.num_experts=8`) and strict key checking."""
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in overrides.items():
        if "." in k:
            head, rest = k.split(".", 1)
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    check_keys(type(cfg), {**flat, **{k: None for k in nested}}, where)
    current = to_dict(cfg)
    for head, sub in nested.items():
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"{where} key {head!r} has no sub-keys (got {head}.{next(iter(sub))})")
        flat[head] = replace(child, sub, f"{where}.{head}")
    current.update({k: v for k, v in flat.items()})
    for k, v in list(current.items()):
        if dataclasses.is_dataclass(getattr(cfg, k)) and isinstance(v, dict):
            current[k] = v
    return from_dict(type(cfg), {k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in current.items()}, where)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists) for JSON/YAML."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _dataclass_in(hint: Any) -> type | None:
    if hint is None:
        return None
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_tuple(hint: Any) -> bool:
    if hint is None:
        return False
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def resolve_sections(sections: dict[str, Any], file_data: dict[str, Any] | None, overrides: dict[str, Any],
                     where: str = "config") -> dict[str, Any]:
    """Apply a config file and `--set` overrides to named dataclass sections.

    sections: e.g. {"model": TrackConfig(...), "train": TrainConfig(...), "data": TrackDataConfig(...)}.
    file_data: {"model": {...}, "train": {...}} (top-level keys must be section names).
    overrides: `--set` items; `section.key=value`, or a bare `key=value` when exactly one section has
    that key (`--set steps=5` -> train.steps). Unknown names are errors listing the valid ones.
    """
    out = dict(sections)
    for name, sub in (file_data or {}).items():
        if name not in out:
            raise ValueError(f"unknown {where} section {name!r}; valid sections: {', '.join(out)}")
        if not isinstance(sub, dict):
            raise ValueError(f"{where} section {name!r} must be a mapping, got {type(sub).__name__}")
        out[name] = replace(out[name], sub, f"{where}.{name}")
    routed: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head = key.split(".", 1)[0]
        if head in out and "." in key:
            routed.setdefault(head, {})[key.split(".", 1)[1]] = value
            continue
        owners = [n for n, s in out.items() if head in {f.name for f in dataclasses.fields(s)}]
        if len(owners) != 1:
            valid = sorted(f"{n}.{f.name}" for n, s in out.items() for f in dataclasses.fields(s))
            why = "is ambiguous" if owners else "is unknown"
            raise ValueError(f"--set key {key!r} {why}; valid keys: {', '.join(valid)}")
        routed.setdefault(owners[0], {})[key] = value
    for name, sub in routed.items():
        out[name] = replace(out[name], sub, f"{where}.{name}")
    return out


# The `kind` a run folder's config.json records, by model family (and a planner ensemble's
# ensemble.json): the one place these names live.
RUN_KINDS = {"track": "track", "policy": "policy", "planner": "trajmoe-drive-planner",
             "planner-ensemble": "trajmoe-drive-ensemble"}


def check_run_kind(run_cfg: dict, family: str, where: str) -> None:
    """ValueError naming `where` unless the run config records the kind of `family` and a model."""
    if run_cfg.get("kind") != RUN_KINDS[family] or "model" not in run_cfg:
        raise ValueError(f"{where} is not a {family} run (config.json has kind={run_cfg.get('kind')!r})")
