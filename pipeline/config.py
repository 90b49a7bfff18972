"""Stage configuration: one frozen dataclass per stage, filled from its params.yaml section.

Every hyperparameter has exactly one home (a dataclass field) and one default (that
field's default). `load_stage_config` reads one section of params.yaml, applies
command-line overrides (`--set key.sub=value`, values parsed as YAML), and checks
every key and type against the dataclass. Unknown keys and wrong types are a
`UserError` that names the dotted key, so a typo never silently falls back to a
default; a key renamed since (`RENAMED_KEYS`) is refused with its new name.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from pipeline.errors import UserError

T = TypeVar("T")

# keys renamed since they were first written in params files: old name → new name. A params
# file or `--set` using the old name is refused in one line naming the new one (only where the
# new name is a key of that section: `prepare.sft.batch_size` is SFT's own, not a renamed key).
RENAMED_KEYS = {
    "batch_size": "generate_batch_size",  # explore, train, evaluate: sequences per HF generate call
}


def load_params(path: str | Path) -> dict[str, Any]:
    """Read params.yaml as a mapping of stage sections."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found; pass --params PATH or run from the project root")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of stage sections at the top level")
    return data


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into a nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learner.sft_steps=200")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {part!r} is set both as a value and as a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `top` wins."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_stage_config(
    cls: type[T],
    section: str,
    *,
    params_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Build stage `section`'s config from params.yaml plus `--set` overrides.

    `params_path=None` means ./params.yaml when it exists, else the dataclass defaults;
    an explicit path must exist.
    """
    if params_path is None:
        params_path = Path("params.yaml")
        params = load_params(params_path) if params_path.is_file() else {}
    else:
        params = load_params(params_path)
    raw = params.get(section) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{params_path}: section {section!r} must be a mapping of keys to values")
    merged = merge(raw, parse_overrides(overrides))
    return from_mapping(cls, merged, where=f"{params_path}: {section}")


def from_mapping(cls: type[T], data: dict[str, Any], *, where: str) -> T:
    """Validate `data` against dataclass `cls` (recursively) and instantiate it."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    renamed = [k for k in unknown if RENAMED_KEYS.get(k) in fields]
    if renamed:
        old = renamed[0]
        raise UserError(f"{where}.{old}: renamed to {RENAMED_KEYS[old]} (same meaning); set that key instead")
    if unknown:
        raise UserError(
            f"{where}.{unknown[0]}: unknown key; valid keys are {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        default = _default_of(fields[name])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial nested section overrides only the keys it names
            value = {**{f.name: getattr(default, f.name) for f in dataclasses.fields(default)}, **value}
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value in args:
            return value
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise UserError(f"{where}: {value!r} is not one of {choices}") from None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        item_tp = args[0] if args else Any
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    raise UserError(f"{where}: expected {tp.__name__}, got {type(value).__name__} ({value!r})")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config (Enums as values, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))
