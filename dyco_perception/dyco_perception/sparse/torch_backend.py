"""Pure-PyTorch sparse convolution (runs anywhere torch runs; autograd through plain ops).

Neighbour maps: voxel coords are hashed to int64 keys, sorted once, and each kernel offset's
neighbours are found with one searchsorted. A conv is then, per kernel offset, a gather of the
input rows, one matmul, and an index_add into the output rows. Maps are cached per level in
`SparseVoxels.cache`, so the two submanifold convs of a residual block share one map.
"""

from __future__ import annotations

import itertools

import torch

from dyco_perception.sparse.tensor import SparseVoxels, offset_key, pack_keys, unpack_keys

Pairs = list[tuple[torch.Tensor, torch.Tensor] | None]
CENTER = 13  # index of offset (0, 0, 0) in the 3x3x3 kernel


def subm_pairs(x: SparseVoxels) -> Pairs:
    """Per kernel offset: (input rows, output rows) with coord_in = coord_out + offset."""
    cache_key = ("subm", x.stride)
    if cache_key in x.cache:
        return x.cache[cache_key]
    keys = pack_keys(x.coords)
    sorted_keys, order = torch.sort(keys)
    num = keys.shape[0]
    pairs: Pairs = [None] * 27
    offsets = list(itertools.product((-1, 0, 1), repeat=3))
    for index, (dx, dy, dz) in enumerate(offsets):
        if index >= CENTER:
            break
        # Offset -d pairs are offset d pairs with input and output swapped.
        query = keys + offset_key(dx, dy, dz)
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=max(num - 1, 0))
        hit = (sorted_keys[pos] == query).nonzero().squeeze(1)
        neighbour = order[pos[hit]]
        pairs[index] = (neighbour, hit)
        pairs[26 - index] = (hit, neighbour)
    x.cache[cache_key] = pairs
    return pairs


def down_pairs(x: SparseVoxels) -> tuple[Pairs, torch.Tensor]:
    """Map of the 2x2x2 stride-2 conv from level `x`: pairs per offset and the output coords."""
    cache_key = ("down", x.stride)
    if cache_key in x.cache:
        return x.cache[cache_key]
    coarse = x.coords.clone()
    coarse[:, 1:] = torch.div(coarse[:, 1:], 2, rounding_mode="floor")
    unique_keys, inverse = torch.unique(pack_keys(coarse), return_inverse=True)
    parity = x.coords[:, 1:] - 2 * coarse[:, 1:]
    kernel_index = parity[:, 0] * 4 + parity[:, 1] * 2 + parity[:, 2]
    order = torch.argsort(kernel_index, stable=True)
    counts = torch.bincount(kernel_index, minlength=8).tolist()
    pairs: Pairs = []
    for rows in torch.split(order, counts):
        pairs.append((rows, inverse[rows]))
    result = (pairs, unpack_keys(unique_keys))
    x.cache[cache_key] = result
    x.cache[("level", x.stride)] = (x.coords, x.spatial_shape)
    return result


def subm_conv(x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
    features = x.features
    out = features @ weight[CENTER]
    for index, pair in enumerate(subm_pairs(x)):
        if pair is None or pair[0].numel() == 0:
            continue
        rows_in, rows_out = pair
        out.index_add_(0, rows_out, features.index_select(0, rows_in) @ weight[index])
    return x.with_features(out)


def down_conv(x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
    pairs, out_coords = down_pairs(x)
    out = x.features.new_zeros(
        out_coords.shape[0], weight.shape[2], dtype=_product_dtype(x, weight)
    )
    for index, (rows_in, rows_out) in enumerate(pairs):
        if rows_in.numel():
            out.index_add_(0, rows_out, x.features.index_select(0, rows_in) @ weight[index])
    shape = tuple(s // 2 for s in x.spatial_shape)
    return SparseVoxels(out, out_coords, x.stride * 2, shape, x.batch_size, x.cache)


def up_conv(x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
    """Inverse of the down conv into level x.stride // 2: each fine voxel gets one product."""
    fine_stride = x.stride // 2
    if ("down", fine_stride) not in x.cache:
        raise ValueError(f"up conv from stride {x.stride}: no down conv at stride {fine_stride}")
    pairs, _ = x.cache[("down", fine_stride)]
    fine_coords, fine_shape = x.cache[("level", fine_stride)]
    out = x.features.new_zeros(
        fine_coords.shape[0], weight.shape[2], dtype=_product_dtype(x, weight)
    )
    for index, (rows_fine, rows_coarse) in enumerate(pairs):
        if rows_fine.numel():
            out.index_add_(0, rows_fine, x.features.index_select(0, rows_coarse) @ weight[index])
    return SparseVoxels(out, fine_coords, fine_stride, fine_shape, x.batch_size, x.cache)


def _product_dtype(x: SparseVoxels, weight: torch.Tensor) -> torch.dtype:
    """dtype of features @ weight (differs from both under autocast)."""
    return (x.features[:0] @ weight[0]).dtype
