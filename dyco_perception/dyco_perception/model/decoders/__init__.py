"""Instance decoders on the shared backbone, one file per method, selected by `decoder.name`.

A fifth method is one new file here: subclass `InstanceDecoder` and decorate it with
`@register_decoder`; every module of this package is imported (and so registered) below.
`base.py` is the decoder contract, `common.py` the machinery several methods share.
"""

from __future__ import annotations

import importlib
import pkgutil

from dyco_perception.model.decoders.base import (
    DecoderInput,
    InstanceDecoder,
    InstanceTargets,
    thing_instance_ids,
)

DECODERS: dict[str, type[InstanceDecoder]] = {}


def register_decoder(cls: type[InstanceDecoder]) -> type[InstanceDecoder]:
    if not cls.name or cls.name in DECODERS:
        raise ValueError(f"decoder name {cls.name!r} is empty or registered twice")
    DECODERS[cls.name] = cls
    return cls


def decoder_class(name: str) -> type[InstanceDecoder]:
    if name not in DECODERS:
        raise ValueError(f"decoder.name={name!r} not allowed; choose one of {sorted(DECODERS)}")
    return DECODERS[name]


def _import_methods() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module not in ("base", "common"):
            importlib.import_module(f"{__name__}.{module}")


_import_methods()

__all__ = [
    "DECODERS",
    "DecoderInput",
    "InstanceDecoder",
    "InstanceTargets",
    "decoder_class",
    "register_decoder",
    "thing_instance_ids",
]
