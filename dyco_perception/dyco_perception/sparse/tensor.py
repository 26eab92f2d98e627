"""The sparse voxel tensor passed between layers, and backend selection."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

BACKENDS = ("torch", "spconv", "gemm", "native")
# Voxel keys pack (batch, x+1, y+1, z+1) into one int64: 15 bits batch, 16 bits per axis.
AXIS_BITS = 16
MAX_AXIS = (1 << AXIS_BITS) - 3  # room for the +1 shift and a -1/+1 neighbour offset
MAX_BATCH = 1 << 15


@dataclass
class SparseVoxels:
    """Active voxels of one U-Net level: features (V,C) and coords (V,4) = (batch, x, y, z).

    Coords are in units of this level's voxels (level-0 coords // stride), all >= 0.
    `cache` is shared by every level of one forward pass (neighbour maps, spconv indice pairs).
    """

    features: torch.Tensor
    coords: torch.Tensor
    stride: int
    spatial_shape: tuple[int, int, int]
    batch_size: int
    cache: dict = field(default_factory=dict)

    def with_features(self, features: torch.Tensor) -> SparseVoxels:
        return SparseVoxels(
            features, self.coords, self.stride, self.spatial_shape, self.batch_size, self.cache
        )


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """Hash (V,4) int64 coords to unique, order-preserving int64 keys (axes shifted by +1)."""
    b, x, y, z = coords.long().unbind(1)
    return (b << (3 * AXIS_BITS)) | ((x + 1) << (2 * AXIS_BITS)) | ((y + 1) << AXIS_BITS) | (z + 1)


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    mask = (1 << AXIS_BITS) - 1
    return torch.stack(
        [
            keys >> (3 * AXIS_BITS),
            ((keys >> (2 * AXIS_BITS)) & mask) - 1,
            ((keys >> AXIS_BITS) & mask) - 1,
            (keys & mask) - 1,
        ],
        dim=1,
    )


def offset_key(dx: int, dy: int, dz: int) -> int:
    return (dx << (2 * AXIS_BITS)) + (dy << AXIS_BITS) + dz


@functools.cache
def spconv_available() -> bool:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def check_backend(backend: str) -> str:
    """`backend` if it names one ("auto" or one of BACKENDS; "spconv" must import), else
    ValueError. "auto" imports nothing: CPU inference never needs spconv."""
    return backend if backend == "auto" else resolve_backend(backend)


def resolve_backend(backend: str) -> str:
    """'auto' -> spconv when importable, else the pure-torch backend (the training choice;
    at inference `SparseConv` resolves 'auto' per layer from measurements instead)."""
    if backend == "auto":
        return "spconv" if spconv_available() else "torch"
    if backend not in BACKENDS:
        raise ValueError(
            f"sparse backend {backend!r} unknown; choose one of auto, {', '.join(BACKENDS)}"
        )
    if backend == "spconv" and not spconv_available():
        raise ValueError("sparse backend 'spconv' requested but spconv.pytorch cannot be imported")
    return backend
