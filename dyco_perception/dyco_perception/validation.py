"""Config validation shared by every config of the code base: dataclass fields declare their
allowed range (`ranged`) or choices (`choice`) in their metadata, and `build_config` builds a
dataclass from a mapping, rejecting unknown keys, wrong types and out-of-range values with a
ValueError that names the key.

The bottom layer: it imports nothing of the project, so `config.py` (the model config), the
decoders' options, `tiling.py`, `objects.py` and training's configs all import it from here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any


def ranged(default: Any, lo: float, hi: float, doc: str = "") -> Any:
    """A numeric field with inclusive bounds [lo, hi]."""
    return field(default=default, metadata={"range": (lo, hi), "doc": doc})


def choice(
    default: Any,
    choices: tuple[Any, ...],
    doc: str = "",
    renamed: dict[Any, Any] | None = None,
) -> Any:
    """A field with a fixed set of values. `renamed` maps values of earlier versions to the
    value that now means the same, so old YAMLs and old model cards load unchanged."""
    meta = {"choices": choices, "doc": doc, "renamed": dict(renamed or {})}
    return field(default=default, metadata=meta)


def build_config(cls: type, data: Any, prefix: str) -> Any:
    """The dataclass `cls` from the mapping `data` (missing keys take defaults; nested dataclass
    fields recurse); errors name the key as `prefix` + field name."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown key(s) {[prefix + k for k in unknown]}; allowed: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = build_config(kind, value, key + ".")
        else:
            kwargs[name] = _check_value(key, value, kind, fields[name].metadata)
    return cls(**kwargs)


def _check_value(key: str, value: Any, kind: Any, meta: Any) -> Any:
    if kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true/false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
    elif isinstance(kind, types.UnionType):
        raise ValueError(f"{key}: unsupported field type {kind}")
    value = meta.get("renamed", {}).get(value, value) if isinstance(value, str) else value
    if "range" in meta:
        lo, hi = meta["range"]
        if not lo <= value <= hi:
            raise ValueError(f"{key}={value!r} out of range; allowed {lo}..{hi}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{key}={value!r} not allowed; choose one of {list(meta['choices'])}")
    return value
