"""Submanifold conv by the native output-stationary CPU kernel (dyco_ops `subm_conv3d`).

Per output voxel the C++ kernel sums features[table[i, k]] @ weight[k] over the voxel's
present neighbours in a register accumulator and writes the row once: no (V, 27 * C_in)
column matrix (gather-GEMM) and no scatter (the per-offset path's index_add). It reads the
gather-GEMM's cached neighbour table (`gemm.subm_table`), so the two share a level's maps;
with the extension built, that table comes from its `subm_neighbour_table` (no pairs needed).
Inference only: float32 CPU tensors without autograd, and only where the native CPU extension
is built and current; elsewhere `usable` is False and "auto" picks another algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dyco_perception import ops
from dyco_perception.sparse import gemm
from dyco_perception.sparse.tensor import SparseVoxels


def kernel() -> Callable[..., torch.Tensor] | None:
    """The native `subm_conv3d`, or None when the CPU extension is absent, stale or older."""
    return ops.cpu_kernel("subm_conv3d")


def unavailable_reason(x: SparseVoxels | None = None) -> str | None:
    """Why the native kernel cannot run (on `x`, when given) in this context; None if it can."""
    if kernel() is None:
        return ops.cpu_kernel_missing("subm_conv3d") or "not loaded"
    if torch.is_grad_enabled():
        return "inference only: run under torch.no_grad()"
    if x is not None and x.features.device.type != "cpu":
        return f"CPU tensors only, got {x.features.device.type}"
    if x is not None and x.features.dtype != torch.float32:
        return f"float32 features only, got {x.features.dtype}"
    return None


def usable(x: SparseVoxels) -> bool:
    return unavailable_reason(x) is None


def subm_conv_native(
    x: SparseVoxels, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> SparseVoxels:
    """Submanifold 3x3x3 conv of `x` with weight (27, C_in, C_out) and an optional bias."""
    why = unavailable_reason(x)
    if why is not None:
        raise RuntimeError(f"native submanifold conv unavailable: {why}")
    return x.with_features(kernel()(x.features, gemm.subm_table(x), weight, bias))
