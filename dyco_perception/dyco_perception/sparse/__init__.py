"""Sparse 3D convolution behind one interface, two backends with the same weights.

`SparseConv` holds a backend-neutral weight of shape (kernel_volume, in, out), where kernel
offset index = (dx * k + dy) * k + dz with d in 0..k-1 (for the 3x3x3 submanifold conv the
spatial offset is d - 1). The "torch" backend (pure PyTorch: hashed keys, sort + searchsorted
neighbour maps, gather -> matmul -> index_add) uses it directly; the "spconv" backend permutes it
into spconv's layout at call time, so one state_dict serves both. "gemm" (gemm.py) runs a
submanifold conv as one gather + one matmul, "native" (native_conv.py) by dyco_ops'
output-stationary C++ kernel where it is built; "auto" picks per layer at inference from the
measurements in algorithms.yaml (algorithms.py).
"""

from __future__ import annotations

from dyco_perception.sparse.conv import SparseConv
from dyco_perception.sparse.tensor import (
    SparseVoxels,
    check_backend,
    resolve_backend,
    spconv_available,
)

__all__ = ["SparseConv", "SparseVoxels", "check_backend", "resolve_backend", "spconv_available"]
