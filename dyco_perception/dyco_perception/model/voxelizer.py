"""Points -> voxels (mean-pooled features) and voxels -> points (each point reads its voxel)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dyco_perception import ops
from dyco_perception.sparse import SparseVoxels
from dyco_perception.sparse.tensor import MAX_AXIS, MAX_BATCH


@dataclass
class Voxelized:
    voxels: SparseVoxels
    point_to_voxel: torch.Tensor  # (N,) row of each point's voxel


def point_features(
    xyz: torch.Tensor,
    rgb: torch.Tensor | None,
    batch: torch.Tensor,
    use_rgb: bool,
    use_xyz: bool,
) -> torch.Tensor:
    """Network input per point: rgb in [-1, 1] and/or xyz relative to its scene's mean."""
    parts = []
    if use_rgb:
        if rgb is None:
            raise ValueError("this model uses colour: rgb (N,3) in [-1, 1] is required")
        parts.append(rgb.to(xyz.dtype))
    if use_xyz:
        num_scenes = int(batch.max()) + 1 if batch.numel() else 1
        centre = ops.scatter_mean(xyz, batch, num_scenes)
        parts.append(xyz - centre[batch])
    if not parts:
        raise ValueError("voxel config: at least one of use_rgb / use_xyz must be true")
    return torch.cat(parts, dim=1)


def voxelize(
    xyz: torch.Tensor,
    features: torch.Tensor,
    batch: torch.Tensor,
    voxel_size: float,
    levels: int,
    grid_origin: torch.Tensor | None = None,
) -> Voxelized:
    """Voxelize each scene of the batch; voxel features are the mean of their points'.

    The grid is anchored at each scene's min corner, or at `grid_origin` (3,) when given (the
    blocks of a tiled map share the map's grid, so a point falls in the same voxel whichever
    block sees it). Coords start at 0 per scene; the spatial shape is a multiple of
    2**(levels-1) so every stride-2 level divides evenly (spconv needs that to match the torch
    backend).
    """
    num_scenes = int(batch.max()) + 1 if batch.numel() else 1
    if num_scenes > MAX_BATCH:
        raise ValueError(f"batch of {num_scenes} scenes exceeds {MAX_BATCH}")
    coords_all, p2v = [], torch.empty_like(batch)
    offset = 0
    for b in range(num_scenes):
        rows = (batch == b).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        # The grid starts at the scene's min corner, so voxels do not depend on where the
        # cloud sits in the world (and inference voxelizes exactly as training crops do).
        anchor = xyz[rows].min(0).values if grid_origin is None else grid_origin.to(xyz)
        cell = torch.floor((xyz[rows] - anchor) / voxel_size).long()
        cell -= cell.min(0).values  # small coords; a no-op for the scene's own corner
        voxel_coords, point_to_voxel = ops.voxelize(cell)
        coords_all.append(
            torch.cat([voxel_coords.new_full((len(voxel_coords), 1), b), voxel_coords.long()], 1)
        )
        p2v[rows] = point_to_voxel.long() + offset
        offset += len(voxel_coords)
    coords = torch.cat(coords_all) if coords_all else batch.new_zeros((0, 4))
    extents = (coords[:, 1:].amax(0) + 1).tolist() if coords.numel() else [1, 1, 1]
    extent = max(extents)
    if extent > MAX_AXIS:
        raise ValueError(
            f"scene spans {extent} voxels of {voxel_size} m along one axis; the limit is "
            f"{MAX_AXIS} (crop the cloud or use a larger voxel size)"
        )
    unit = 2 ** (levels - 1)
    shape = tuple(max(unit, -(-e // unit) * unit) for e in extents)
    voxel_features = ops.scatter_mean(features, p2v, len(coords))
    voxels = SparseVoxels(voxel_features, coords, 1, shape, num_scenes)
    return Voxelized(voxels, p2v)


def devoxelize(voxel_values: torch.Tensor, voxelized: Voxelized) -> torch.Tensor:
    """Per-point values: each point takes its voxel's row."""
    return voxel_values[voxelized.point_to_voxel]
