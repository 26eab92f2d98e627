"""Instance decoders on the shared backbone, one file per method, selected by `decoder.name`.

A fifth method is one new file here: subclass `InstanceDecoder`, decorate it with
`@register_decoder`, and import it below.
"""

from __future__ import annotations

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


# The registered methods (import order = listing order).
from dyco_perception.model.decoders import dyco3d  # noqa: E402, F401

__all__ = [
    "DECODERS",
    "DecoderInput",
    "InstanceDecoder",
    "InstanceTargets",
    "decoder_class",
    "register_decoder",
    "thing_instance_ids",
]
