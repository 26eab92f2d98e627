"""Instance decoders on the shared backbone, one file per method, selected by `decoder.name`.

A fifth method is one new file here: subclass `InstanceDecoder` and decorate it with
`@register_decoder`; every module of this package is imported (and so registered) below.
`base.py` is the decoder contract, `common.py` the machinery several methods share.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from dyco_perception.config import register_decoder_section
from dyco_perception.model.decoders.base import (
    DecoderInput,
    InstanceDecoder,
    InstanceTargets,
    options_from_dict,
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


def decoder_options(name: str, options: dict[str, Any]) -> Any:
    """The `decoder:` section of a model config (`name` + `options`) -> that method's validated
    `Options`; ValueError naming the key. `ModelConfig` validates its section through this."""
    return options_from_dict(decoder_class(name).Options, options)


_import_methods()
register_decoder_section(decoder_options)

__all__ = [
    "DECODERS",
    "DecoderInput",
    "InstanceDecoder",
    "InstanceTargets",
    "decoder_class",
    "decoder_options",
    "register_decoder",
    "thing_instance_ids",
]
