"""Submanifold conv as one gather + one GEMM (im2col), and the per-offset path in bfloat16.

gather-GEMM: a cached neighbour table (V, 27) holds, per output voxel and kernel offset, the
input row (or V, a zero padding row); one index_select builds the (V, 27 * C_in) column matrix
and one matmul with weight.reshape(27 * C_in, C_out) gives the output. It trades the per-offset
path's 27 small gathers, matmuls and index_adds for one large GEMM that also multiplies the
padding zeros, so it wins where voxels are few (dispatch overhead dominates) and loses where a
scan's surface leaves most of the 27 neighbours empty (bench/bench_sparse_conv.py measures it).
Autograd flows through both (plain ops); the scratch buffer is used only without grad.
The table is built by dyco_ops' native `subm_neighbour_table` from the coords alone where that
is built and the coords are on the CPU (integer work: with or without grad), else from the
per-offset pairs (torch_backend.subm_pairs); both give the same table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from dyco_perception import ops
from dyco_perception.sparse.tensor import SparseVoxels
from dyco_perception.sparse.torch_backend import CENTER, subm_pairs

_local = threading.local()


def native_table_builder() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """dyco_ops' `subm_neighbour_table` (coords (V, 4) int64 -> (V, 27) int64), or None when
    the CPU extension is absent, stale or older."""
    return ops.cpu_kernel("subm_neighbour_table")


def subm_table(x: SparseVoxels) -> torch.Tensor:
    """(V, 27) int64: input row of each (output voxel, kernel offset), V where none."""
    cache_key = ("subm_table", x.stride)
    if cache_key in x.cache:
        return x.cache[cache_key]
    build = native_table_builder()
    if build is not None and x.coords.device.type == "cpu":
        table = build(x.coords.long())  # from the coords alone: no pairs needed
    else:
        table = subm_table_from_pairs(x)
    x.cache[cache_key] = table
    return table


def subm_table_from_pairs(x: SparseVoxels) -> torch.Tensor:
    """The table of `subm_table` scattered from the per-offset pairs (builds or reuses them)."""
    num = x.coords.shape[0]
    table = torch.full((num, 27), num, dtype=torch.long, device=x.coords.device)
    table[:, CENTER] = torch.arange(num, device=x.coords.device)
    for index, pair in enumerate(subm_pairs(x)):
        if pair is not None:
            rows_in, rows_out = pair
            table[rows_out, index] = rows_in
    return table


def _scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reused flat buffer: a fresh 100 MB tensor per layer costs more in page faults than the
    gather itself (measured 56 ms vs 6 ms for 42k voxels x 27 x 16 channels)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (dtype, str(device))
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel]


def release_scratch() -> None:
    """Free this thread's gather buffers (they are kept between calls for speed)."""
    _local.buffers = {}


def subm_conv_gemm(
    x: SparseVoxels,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> SparseVoxels:
    """Submanifold 3x3x3 conv by gather-GEMM; `dtype`: the matmul's (default: the features')."""
    table = subm_table(x)
    num, c_in = x.features.shape
    dtype = dtype or x.features.dtype
    features = x.features.to(dtype)
    padded = torch.cat([features, features.new_zeros(1, c_in)])
    flat = table.view(-1)
    if torch.is_grad_enabled():
        columns = padded.index_select(0, flat)
    else:
        columns = torch.index_select(
            padded, 0, flat, out=_scratch(flat.numel() * c_in, dtype, padded.device).view(-1, c_in)
        )
    out = columns.view(num, 27 * c_in) @ weight.reshape(27 * c_in, -1).to(dtype)
    out = out.to(x.features.dtype)
    if bias is not None:
        out = out + bias
    return x.with_features(out)


def subm_conv_offsets_bf16(
    x: SparseVoxels, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> SparseVoxels:
    """The per-offset path with bfloat16 matmuls, accumulated in float32 (inference only)."""
    features = x.features.bfloat16()
    weight = weight.bfloat16()
    out = (features @ weight[CENTER]).float()
    for index, pair in enumerate(subm_pairs(x)):
        if pair is None or pair[0].numel() == 0:
            continue
        rows_in, rows_out = pair
        out.index_add_(0, rows_out, (features.index_select(0, rows_in) @ weight[index]).float())
    if bias is not None:
        out += bias
    return x.with_features(out)
